//! The documentation's relative links resolve: every `[text](target)` in
//! README.md and docs/*.md that is not http(s) or mailto names a file or
//! directory that exists, and its `#anchor`, if any, is a heading of the
//! target (GitHub's anchors: lowercase, spaces to '-', other punctuation but
//! '-' and '_' dropped, "-1", "-2" for repeats). Links inside fenced code
//! blocks and code spans are not links. The README stays short: at most 400
//! lines, with a link to every docs/ page.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

const README_MAX_LINES: usize = 400;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// README.md and docs/*.md, relative to the repository.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| Path::new("docs").join(p.file_name().expect("a file name")))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fence opening or closing line: its character and run length.
fn fence(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start();
    let c = t.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = t.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// The text with fenced code blocks blanked (line numbers kept).
fn without_fences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        match (open, fence(line)) {
            (None, Some(f)) => {
                open = Some(f);
                out.push('\n');
            }
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n && line.trim().chars().all(|x| x == c) => {
                open = None;
                out.push('\n');
            }
            (Some(_), _) => out.push('\n'),
            (None, None) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Code spans replaced by spaces (newlines kept). A run of backticks opens a
/// span closed by a run of the same length before the paragraph ends; an
/// unmatched run is literal.
fn without_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let n = chars[i..].iter().take_while(|&&c| c == '`').count();
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '\n' && chars.get(j + 1) == Some(&'\n') {
                break;
            }
            if chars[j] == '`' {
                let m = chars[j..].iter().take_while(|&&c| c == '`').count();
                if m == n {
                    close = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                for &c in &chars[i..end] {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                }
                i = end;
            }
            None => {
                for _ in 0..n {
                    out.push('`');
                }
                i += n;
            }
        }
    }
    out
}

/// Index of the bracket closing the one at `open` (same kind, nesting counted).
fn closing(chars: &[char], open: usize, (l, r): (char, char)) -> Option<usize> {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            c if c == l => depth += 1,
            c if c == r => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            '\n' if l == '(' && chars.get(i + 1) == Some(&'\n') => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Every link target in a markdown text, with its line number: inline links
/// and images `[text](target "title")` and reference definitions
/// `[label]: target`, outside fenced code and code spans.
fn links(text: &str) -> Vec<(usize, String)> {
    let prose = without_code_spans(&without_fences(text));
    let chars: Vec<char> = prose.chars().collect();
    let line_of = |at: usize| 1 + chars[..at].iter().filter(|&&c| c == '\n').count();
    let mut found = Vec::new();
    for i in 0..chars.len() {
        if chars[i] != '[' || (i > 0 && chars[i - 1] == '\\') {
            continue;
        }
        let Some(close) = closing(&chars, i, ('[', ']')) else { continue };
        if chars.get(close + 1) == Some(&'(') {
            if let Some(end) = closing(&chars, close + 1, ('(', ')')) {
                let inside: String = chars[close + 2..end].iter().collect();
                let target = inside.split_whitespace().next().unwrap_or("");
                let target = target.trim_start_matches('<').trim_end_matches('>');
                found.push((line_of(i), target.to_owned()));
            }
        } else if chars.get(close + 1) == Some(&':') {
            let line_start = chars[..i].iter().rposition(|&c| c == '\n').map_or(0, |p| p + 1);
            if chars[line_start..i].iter().all(|c| *c == ' ') {
                let rest: String = chars[close + 2..].iter().take_while(|&&c| c != '\n').collect();
                if let Some(target) = rest.split_whitespace().next() {
                    let target = target.trim_start_matches('<').trim_end_matches('>');
                    found.push((line_of(i), target.to_owned()));
                }
            }
        }
    }
    found
}

/// A heading's anchor as GitHub makes it.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// A heading's text as rendered: links and images by their text, code spans
/// by their content, emphasis markers gone.
fn heading_text(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '!' && chars.get(i + 1) == Some(&'[') {
            i += 1;
            continue;
        }
        if chars[i] == '['
            && let Some(close) = closing(&chars, i, ('[', ']'))
            && chars.get(close + 1) == Some(&'(')
            && let Some(end) = closing(&chars, close + 1, ('(', ')'))
        {
            out.push_str(&heading_text(&chars[i + 1..close].iter().collect::<String>()));
            i = end + 1;
            continue;
        }
        if chars[i] != '`' && chars[i] != '*' {
            out.push(chars[i]);
        }
        i += 1;
    }
    out.trim().to_owned()
}

/// The anchors a markdown text defines: one per heading (ATX and setext,
/// outside fenced code; repeats numbered as GitHub does) and every
/// `<a name="…">` / `id="…"`.
fn anchors(text: &str) -> BTreeSet<String> {
    let prose = without_fences(text);
    let lines: Vec<&str> = prose.lines().collect();
    let mut headings = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let t = line.trim_start_matches(' ');
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if indent <= 3 && (1..=6).contains(&hashes) && (t.len() == hashes || t[hashes..].starts_with([' ', '\t'])) {
            let body = t[hashes..].trim();
            // A closing run of '#' preceded by a space is not part of the text.
            let body = match body.trim_end_matches('#') {
                b if b.is_empty() || b.ends_with([' ', '\t']) => b.trim_end(),
                _ => body,
            };
            headings.push(heading_text(body));
            continue;
        }
        let underline = !t.is_empty()
            && indent <= 3
            && (t.trim_end().chars().all(|c| c == '=') || t.trim_end().chars().all(|c| c == '-'));
        if underline && n > 0 {
            let prev = lines[n - 1].trim();
            let starts_block = prev.is_empty()
                || prev.starts_with(['#', '|', '>', '-', '*', '+'])
                || prev.chars().next().is_some_and(|c| c.is_ascii_digit());
            if !starts_block {
                headings.push(heading_text(prev));
            }
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for h in headings {
        let base = slug(&h);
        let count = seen.entry(base.clone()).or_insert(0);
        out.insert(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
        *count += 1;
    }
    for attr in ["name=\"", "id=\""] {
        for (at, _) in prose.match_indices(attr) {
            let rest = &prose[at + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.insert(rest[..end].to_owned());
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_external(target: &str) -> bool {
    let t = target.to_ascii_lowercase();
    t.starts_with("http://") || t.starts_with("https://") || t.starts_with("mailto:")
}

/// `a/b/../c` as `a/c`, relative to the repository; None if it leaves it.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// What is wrong with the links of one file (relative to the repository),
/// and the files its links resolve to.
fn check(file: &Path, text: &str) -> (Vec<String>, BTreeSet<PathBuf>) {
    let root = repo();
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    let mut targets = BTreeSet::new();
    for (line, target) in links(text) {
        let at = format!("{}:{line}: ({target})", file.display());
        if target.is_empty() {
            problems.push(format!("{at}: empty link target"));
            continue;
        }
        if is_external(&target) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (percent_decode(p), Some(percent_decode(a))),
            None => (percent_decode(&target), None),
        };
        let resolved = if path.is_empty() {
            Some(file.to_path_buf())
        } else if let Some(abs) = path.strip_prefix('/') {
            normalise(Path::new(abs))
        } else {
            normalise(&dir.join(&path))
        };
        let Some(resolved) = resolved else {
            problems.push(format!("{at}: leaves the repository"));
            continue;
        };
        if !root.join(&resolved).exists() {
            problems.push(format!("{at}: {} does not exist", resolved.display()));
            continue;
        }
        targets.insert(resolved.clone());
        let Some(anchor) = anchor else { continue };
        if resolved.extension().is_some_and(|e| e == "md") {
            let target_text = std::fs::read_to_string(root.join(&resolved)).expect("a readable markdown file");
            let defined = anchors(&target_text);
            if !defined.contains(&anchor) {
                problems.push(format!(
                    "{at}: no heading with anchor #{anchor} in {}; its anchors: {}",
                    resolved.display(),
                    defined.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
                ));
            }
        } else {
            // GitHub's line anchors: #L12 or #L12-L20.
            let line_number =
                |p: &str| p.strip_prefix('L').is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            let line_anchor = anchor.split('-').count() <= 2 && anchor.split('-').all(line_number);
            if !line_anchor {
                problems.push(format!("{at}: anchor #{anchor} into a file that is not markdown"));
            }
        }
    }
    (problems, targets)
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = repo();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(root.join(&file)).expect("a readable doc file");
        checked += links(&text).len();
        problems.extend(check(&file, &text).0);
    }
    assert!(checked > 10, "only {checked} links found: is the link parser broken?");
    assert!(problems.is_empty(), "broken links in the docs:\n{}", problems.join("\n"));
}

#[test]
fn the_readme_is_short_and_links_every_docs_page() {
    let text = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move a section to docs/"
    );
    let (_, targets) = check(Path::new("README.md"), &text);
    let unlisted: Vec<String> = doc_files()
        .into_iter()
        .skip(1)
        .filter(|page| !targets.contains(page))
        .map(|page| page.display().to_string())
        .collect();
    assert!(unlisted.is_empty(), "docs pages the README's Documentation list does not link: {unlisted:?}");
}

#[test]
fn the_link_checker_sees_what_github_renders() {
    let text = "# Title\n\
                See [a](a.md) and [b](docs/b.md#some-part \"title\"), ![img](x.png).\n\
                `[not](code.md)` and ``[nor](this.md)``.\n\
                \n\
                ```md\n\
                [fenced](never.md)\n\
                ## Fenced heading\n\
                ```\n\
                \n\
                [ref]: ref.md#x\n\
                ## Two pixels in one word (M4/M7)\n\
                ## All at once: `tinykd run`\n\
                ## Beside onnxruntime's quantization\n\
                ## Title\n\
                Setext heading\n\
                --------------\n";
    let found: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["a.md", "docs/b.md#some-part", "x.png", "ref.md#x"]);
    assert_eq!(links(text)[1].0, 2);
    let a = anchors(text);
    for want in [
        "title",
        "two-pixels-in-one-word-m4m7",
        "all-at-once-tinykd-run",
        "beside-onnxruntimes-quantization",
        "title-1",
        "setext-heading",
    ] {
        assert!(a.contains(want), "missing anchor {want} in {a:?}");
    }
    assert!(!a.contains("fenced-heading"));
    assert_eq!(slug("Results (measured here, 2 cores)"), "results-measured-here-2-cores");
    assert_eq!(slug("The `.tkd` format"), "the-tkd-format");
}
