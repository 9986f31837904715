"""The text of a UnifiedRecord (udmf.text), as a grounded chat's prompt takes it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from udmf import HTML, ContentForm, Hyperlink, Image, PixelMap, PlainText, UnifiedRecord, UtdRegistry
from udmf.text import html_text, record_text

REG = UtdRegistry()


def text(record: UnifiedRecord, max_chars: int = 1000) -> str:
    return record_text(record, REG, max_chars)


def test_each_struct_with_text_gives_it() -> None:
    assert text(UnifiedRecord(PlainText("Hello there", abstract="Greeting"))) == "Greeting\nHello there"
    assert (
        text(UnifiedRecord(Hyperlink("https://example.org", "Example site")))
        == "Example site (https://example.org)"
    )
    assert text(UnifiedRecord(Hyperlink("https://example.org"))) == "https://example.org"
    assert (
        text(UnifiedRecord(HTML("<p>Hi <b>you</b></p>", plain_content="Hi you (plain)"))) == "Hi you (plain)"
    )
    assert text(UnifiedRecord(HTML("<h1>Title</h1><p>Body &amp; more</p>"))) == "Title\nBody & more"
    form = ContentForm("A title", description="About it", link_uri="https://x.test")
    assert text(UnifiedRecord(form)) == "A title\nAbout it\nhttps://x.test"


def test_records_without_text_give_none() -> None:
    assert text(UnifiedRecord(Image("file:///a.png"))) == ""
    assert text(UnifiedRecord(PixelMap(b"\x00" * 4, 1, 1))) == ""
    assert text(UnifiedRecord("general.png", b"\x89PNG")) == ""
    assert text(UnifiedRecord()) == ""


def test_strings_and_utf8_bytes_under_text_types() -> None:
    assert text(UnifiedRecord("general.markdown", "# Notes\n- milk")) == "# Notes\n- milk"
    assert text(UnifiedRecord("general.plain-text", "plain str")) == "plain str"
    assert text(UnifiedRecord("general.plain-text", "naïve".encode())) == "naïve"
    assert text(UnifiedRecord("general.plain-text", b"\xff\xfe")) == ""
    assert text(UnifiedRecord("general.html", "<div>in <i>html</i></div>")) == "in html"
    assert text(UnifiedRecord("general.object", "not declared as text")) == ""


def test_a_record_is_one_content_so_its_plain_text_wins() -> None:
    record = UnifiedRecord(HTML("<p>the html</p>"))
    record.add_entry(PlainText("the plain text"))
    assert text(record) == "the plain text"
    record = UnifiedRecord(Image("file:///a.png"))
    record.add_entry(Hyperlink("https://a.test", "first with text"))
    record.add_entry(HTML("<p>second</p>"))
    assert text(record) == "first with text (https://a.test)"


def test_html_without_scripts_styles_and_only_as_much_as_needed() -> None:
    page = (
        "<html><head><style>p {}</style><script>var x = '<p>no</p>';</script></head><body><p>yes</p></body>"
    )
    assert html_text(page, 100) == "yes"
    huge = "<p>" + "word " * 1_000_000 + "</p>"
    assert html_text(huge, 20) == "word word word word "
    assert text(UnifiedRecord(PlainText("x" * 50)), max_chars=10) == "x" * 10


@given(st.text(max_size=300), st.integers(1, 50))
def test_html_text_is_bounded_and_never_fails(markup: str, max_chars: int) -> None:
    assert len(html_text(markup, max_chars)) <= max_chars
