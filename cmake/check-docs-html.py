#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks the HTML that doxygen generated for markup that went wrong
without a warning (doxygen 1.9.4 warns about neither):

- a literal "**" in the text (outside code), i.e. Markdown bold that was
  not recognised, as with **`name`:** or **word (`name`):**;
- bold (<b> or <strong>) that is not closed inside the paragraph, list
  item or cell where it opened, or that runs over more than 300
  characters: an unmatched ** that turned the rest of a page bold.

With --version V, it also checks that the pages show version V (doxygen's
PROJECT_NUMBER).

Usage: check-docs-html.py [--version V] HTML_DIR. Prints one line per
problem (file, and the text around it) and exits with 1 if there was any.
"""
import html.parser
import pathlib
import sys

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}
CODE = {"code", "pre", "script", "style", "tt", "kbd", "samp"}
# Elements that hold code: examples and tooltips, and the declarations in
# member tables and prototypes (where "tether_conn **out" is C, not Markdown).
CODE_CLASSES = {"fragment", "ttc", "ttname", "ttdeci", "ttdoc", "ttdef", "line",
                "memname", "memproto", "memItemLeft", "memItemRight", "memTemplItemLeft",
                "memTemplItemRight", "paramtype", "paramname", "fieldtype"}
BLOCK = {"p", "li", "td", "th", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6",
         "div", "table", "ul", "ol", "dl", "blockquote", "body", "html"}
BOLD = {"b", "strong"}
MAX_BOLD = 300


class Checker(html.parser.HTMLParser):
    def __init__(self, name):
        super().__init__(convert_charrefs=True)
        self.name = name
        self.stack = []  # [tag, is_code, bold_text_or_None]
        self.problems = []
        self.recent = ""  # the last text seen, for context

    def in_code(self):
        return any(entry[1] for entry in self.stack)

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        is_code = tag in CODE or bool(classes & CODE_CLASSES)
        self.stack.append([tag, is_code, [] if tag in BOLD else None])

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not any(entry[0] == tag for entry in self.stack):
            return  # a stray end tag; browsers ignore it too
        while self.stack:
            entry = self.stack.pop()
            if entry[0] == tag:
                if tag in BOLD:
                    text = "".join(entry[2])
                    if len(text) > MAX_BOLD:
                        self.problem(f"bold runs over {len(text)} characters: "
                                     f"'{text[:60]}...{text[-40:]}'")
                return
            if entry[0] in BOLD and tag in BLOCK and not entry[1]:
                text = "".join(entry[2])
                self.problem(f"<{entry[0]}> not closed before </{tag}>: '{text[:80]}'")

    def handle_data(self, data):
        if self.in_code():
            return
        for entry in self.stack:
            if entry[2] is not None:
                entry[2].append(data)
        self.recent = (self.recent + data)[-200:]
        if "**" in data:
            i = data.index("**")
            context = data[max(0, i - 40):i + 60].replace("\n", " ")
            self.problem(f"literal ** in the text: '{context}'")

    def problem(self, what):
        self.problems.append(f"{self.name}: {what}")


def main():
    args = sys.argv[1:]
    version = None
    if len(args) == 3 and args[0] == "--version":
        version, args = args[1], args[2:]
    if len(args) != 1:
        print("usage: check-docs-html.py [--version V] HTML_DIR", file=sys.stderr)
        return 2
    root = pathlib.Path(args[0])
    files = sorted(root.glob("*.html"))
    if not files:
        print(f"check-docs-html: no HTML files in {root}", file=sys.stderr)
        return 1
    problems = []
    for f in files:
        checker = Checker(f.name)
        checker.feed(f.read_text(encoding="utf-8", errors="replace"))
        checker.close()
        problems += checker.problems
    if version is not None:
        index = root / "index.html"
        shown = f'<span id="projectnumber">&#160;{version}</span>'
        if not index.exists() or shown not in index.read_text(encoding="utf-8", errors="replace"):
            problems.append(f"index.html: does not show the version {version} (PROJECT_NUMBER)")
    for p in problems:
        print(f"check-docs-html: {p}")
    if problems:
        print(f"check-docs-html: {len(problems)} problems in {root}", file=sys.stderr)
        return 1
    print(f"check-docs-html: {len(files)} pages, no broken bold"
          + (f", version {version}" if version else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
