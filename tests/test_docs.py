"""docs/results.md shows cnnlab's figures beside each report's: every image it links is committed
(and small), every report has at least one, and every figure under docs/figures/ is linked."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_image_results_md_links_exists_and_each_report_has_one():
    text = (DOCS / "results.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links, "docs/results.md links no figure"
    for link in links:
        path = DOCS / link
        assert path.is_file(), f"docs/results.md links {link}, which is not there"
        assert path.stat().st_size < 250_000, f"{link} is {path.stat().st_size} bytes: keep the figures small"
    sections = re.split(r"^## ", text, flags=re.M)
    for seed in ("000", "001", "002", "003", "004"):
        body = next((s for s in sections if s.startswith(seed)), None)
        assert body is not None, f"docs/results.md has no section for report {seed}"
        assert re.search(r"!\[[^\]]*\]\(figures/", body), f"report {seed}'s section has no figure"
    unlinked = {p.name for p in (DOCS / "figures").glob("*.png")} - {Path(link).name for link in links}
    assert not unlinked, f"figures nobody links: {sorted(unlinked)}"
