from datamgr.cli import main

main()
