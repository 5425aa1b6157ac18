"""appliance.gui._html: values are escaped unless built as markup; a template value left out is an error."""
from __future__ import annotations

import pytest

from appliance.gui._html import Html, esc, link, render, table, url


def test_values_are_escaped_unless_markup() -> None:
    assert esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    assert esc(Html("<b>ok</b>")) == "<b>ok</b>"
    assert link('/gui/"x"', "<i>") == '<a href="/gui/&quot;x&quot;">&lt;i&gt;</a>'
    assert table(["<h>"], [["<c>"]]).count("<") == table(["h"], [["c"]]).count("<")


def test_url_segments_are_quoted() -> None:
    assert url("meshes", "a/b", "dataplanes", "<x>") == "/gui/meshes/a%2Fb/dataplanes/%3Cx%3E"


def test_a_template_value_left_out_is_an_error() -> None:
    with pytest.raises(KeyError):
        render("error.html")
    assert "&lt;script&gt;" in render("error.html", message="<script>")
