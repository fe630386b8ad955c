//! The docs hold to the repository: every relative link in `README.md` and
//! `docs/*.md` opens a file that exists (and, with `#anchor`, a heading or
//! `<a id>` of it), and every repository path a doc names in backticks
//! exists. No network: web links are not followed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The docs: the README and every page of `docs/`.
fn docs() -> Vec<PathBuf> {
    let mut out = vec![repo().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    out.extend(pages);
    out
}

/// The text outside fenced code blocks, line by line.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation
/// other than `-` and `_` dropped; a repeated heading gets `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in prose(text) {
        if let Some(title) = line
            .strip_prefix('#')
            .map(|t| t.trim_start_matches('#'))
            .filter(|t| t.starts_with(' '))
        {
            let slug: String = title
                .trim()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    '-' | '_' => Some(c),
                    c if c.is_alphanumeric() => Some(c),
                    _ => None,
                })
                .flat_map(char::to_lowercase)
                .collect();
            let mut name = slug.clone();
            let mut n = 0;
            while out.contains(&name) {
                n += 1;
                name = format!("{slug}-{n}");
            }
            out.insert(name);
        }
        let mut rest = line;
        while let Some(at) = rest.find("<a id=\"") {
            rest = &rest[at + 7..];
            if let Some(end) = rest.find('"') {
                out.insert(rest[..end].to_owned());
            }
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of a line.
fn links(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// The repository paths a line names in backticks: a code span that is
/// one path-like word starting with a top-level directory or root file.
fn named_paths(line: &str) -> Vec<&str> {
    const ROOTS: [&str; 10] = [
        "model/",
        "core/",
        "ingest/",
        "processor/",
        "dashboard/",
        "tests/",
        "deploy/",
        "docs/",
        ".ci/",
        "Cargo.toml",
    ];
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            ROOTS.iter().any(|r| s.starts_with(r))
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        })
        .collect()
}

#[test]
fn every_link_and_path_in_the_docs_exists() {
    let root = repo();
    let mut checked = (0, 0);
    let mut broken = Vec::new();
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).expect("read doc");
        let name = doc
            .strip_prefix(&root)
            .expect("in repo")
            .display()
            .to_string();
        let dir = doc.parent().expect("dir");
        for (i, line) in prose(&text).into_iter().enumerate() {
            for target in links(line) {
                if target.starts_with("http://")
                    || target.starts_with("https://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                checked.0 += 1;
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let path = if file.is_empty() {
                    doc.clone()
                } else {
                    dir.join(file)
                };
                if !path.exists() {
                    broken.push(format!("{name}:{}: link to {target}: no such file", i + 1));
                    continue;
                }
                if !anchor.is_empty() {
                    let there = std::fs::read_to_string(&path).expect("read target");
                    if !anchors(&there).contains(anchor) {
                        broken.push(format!(
                            "{name}:{}: link to {target}: no such anchor",
                            i + 1
                        ));
                    }
                }
            }
            for path in named_paths(line) {
                checked.1 += 1;
                if !root.join(path).exists() {
                    broken.push(format!("{name}:{}: names {path}: no such path", i + 1));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken:\n{}",
        broken.len(),
        broken.join("\n")
    );
    assert!(
        checked.0 >= 20 && checked.1 >= 50,
        "only {} links and {} paths checked",
        checked.0,
        checked.1
    );
}

#[test]
fn the_readme_stays_a_front_page() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: move detail to docs/"
    );
    // It names the test command CI runs (`.ci/run` runs it, then stops
    // the stack it started).
    assert!(readme.contains("\ndeploy/local/test\n"));
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines()
            .any(|l| l.trim_start().starts_with("deploy/local/test ")),
        "{ci}"
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let text = "# Runbook\n## Free text by declaration, not by detection\n## The `ops` port\n\
                ## Alerts\n## Alerts\n```\n# not a heading\n```\n<a id=\"alert-x\"></a>";
    let got: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(
        got,
        [
            "alert-x",
            "alerts",
            "alerts-1",
            "free-text-by-declaration-not-by-detection",
            "runbook",
            "the-ops-port"
        ]
    );
    assert_eq!(
        named_paths("see `core/src/later.rs`, `figures.rs` and `deploy/local/bench all`"),
        ["core/src/later.rs"]
    );
}

/// Every route an OpenAPI file describes is named in the doc that
/// explains it (a word of a code span), so the prose API
/// reference cannot miss a route `tests/tests/openapi.rs` holds the code to.
#[test]
fn every_described_route_is_in_the_docs() {
    for (spec, doc) in [
        ("dashboard/assets/openapi.json", "docs/api.md"),
        ("ingest/assets/openapi.json", "docs/collector.md"),
    ] {
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join(spec)).expect("read spec"))
                .expect("spec is JSON");
        let text = std::fs::read_to_string(repo().join(doc)).expect("read doc");
        // The words of every code span: `POST /v1/import`, `/metrics`, …
        let named: BTreeSet<&str> = text
            .split('`')
            .skip(1)
            .step_by(2)
            .flat_map(|span| span.split([' ', ',', '?', '[']))
            .collect();
        let paths = spec["paths"].as_object().expect("paths");
        assert!(paths.len() >= 8, "{doc}: {} paths", paths.len());
        let missing: Vec<&String> = paths
            .keys()
            .filter(|p| !named.contains(p.as_str()))
            .collect();
        assert!(missing.is_empty(), "{doc} does not list {missing:?}");
    }
}
