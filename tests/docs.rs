//! The option docs against the binaries: every flag a stage's `--help`
//! lists is written in that stage's section of docs/options.md, every flag
//! a table row there names exists in the stage's `--help`, and every flag
//! README's stage overview names exists. A flag added, renamed or removed
//! without its documentation fails here.

mod common;

use std::collections::BTreeSet;

use common::{run, stage};

/// docs/options.md's stage sections, by their heading, and the stages each documents.
const SECTIONS: [(&str, &[&str]); 7] = [
    ("## `prep`", &["prep"]),
    ("## `pretrain`", &["pretrain"]),
    ("## `project` and `finetune`", &["project", "finetune"]),
    ("## `embed`", &["embed"]),
    ("## `evaluate`", &["evaluate"]),
    ("## `explore`", &["explore"]),
    ("## `estimate`", &["estimate"]),
];

/// The `--long` flags in `text`, each cut at the first character that
/// cannot be part of a flag name.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let after = &rest[i + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let before_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '-');
        if before_ok && name.len() > 1 && !name.ends_with('-') {
            out.insert(format!("--{name}"));
        }
        rest = &after[name.len()..];
    }
    out
}

/// The flags a binary's `--help` lists as options (the lines that start
/// with a flag), without `--help` and `--version`.
fn help_flags(bin: &str) -> BTreeSet<String> {
    let r = run(bin, &["--help"]);
    assert!(r.ok(), "{bin} --help: {}", r.stderr);
    r.stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| flags(l.split("  ").next().unwrap_or(l)))
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// The text of `doc` from `heading` to the next `## ` heading.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("no section {heading}"));
    let body = &doc[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |e| e + 3);
    &body[..end]
}

fn read(doc: &str) -> String {
    std::fs::read_to_string(common::repo_root().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

#[test]
fn the_options_page_documents_exactly_the_flags_of_each_stage() {
    let options = read("docs/options.md");
    let mut problems = Vec::new();
    for (heading, bins) in SECTIONS {
        let text = section(&options, heading);
        let documented = flags(text);
        let mut offered = BTreeSet::new();
        for name in bins {
            let own = help_flags(name);
            assert!(!own.is_empty(), "{name} --help lists no flags");
            for f in own.difference(&documented) {
                problems.push(format!(
                    "{name} {f}: not in docs/options.md's section {heading}"
                ));
            }
            offered.extend(own);
        }
        // The tables' first cells: `| `--flag` ... |`.
        for row in text.lines().filter(|l| l.starts_with("| `-")) {
            let first = row.split('|').nth(1).unwrap_or("");
            for f in flags(first).difference(&offered) {
                problems.push(format!(
                    "docs/options.md's section {heading} documents {f}, which no stage of it has"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// README's overview of the stages names only flags that some stage has.
#[test]
fn readme_names_only_real_flags() {
    let readme = read("README.md");
    let text = section(&readme, "## The stages");
    let offered: BTreeSet<String> = tsimcne_cli::stages::STAGES
        .iter()
        .flat_map(|s| help_flags(s.name))
        .chain(["--help", "--link-stages", "--path"].map(String::from))
        .collect();
    let unknown: Vec<String> = flags(text).difference(&offered).cloned().collect();
    assert!(
        unknown.is_empty(),
        "README's section \"The stages\" names flags no stage has: {unknown:?}"
    );
}

/// Each options section is one of the executable's stages, and every stage
/// has its section.
#[test]
fn the_options_page_has_a_section_for_every_stage() {
    let documented: BTreeSet<&str> = SECTIONS
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    let stages: BTreeSet<&str> = tsimcne_cli::stages::STAGES.iter().map(|s| s.name).collect();
    assert_eq!(documented, stages);
}

/// `tsimcne STAGE` is the stage under its own name, and `tsimcne --help`
/// lists every stage.
#[test]
fn the_executable_runs_each_stage_by_name_and_by_argument() {
    let exe = env!("CARGO_BIN_EXE_tsimcne");
    let out = std::process::Command::new(exe)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for st in &tsimcne_cli::stages::STAGES {
        assert!(
            help.contains(st.name),
            "tsimcne --help does not list {}",
            st.name
        );
        let by_name = run(st.name, &["--help"]);
        let by_arg = std::process::Command::new(exe)
            .args([st.name, "--help"])
            .output()
            .unwrap();
        assert!(by_name.ok());
        assert_eq!(by_name.stdout, String::from_utf8_lossy(&by_arg.stdout));
        assert!(
            by_name.stdout.contains(&format!("Usage: {}", st.name)),
            "{}",
            by_name.stdout
        );
        // The link is where make build puts it: beside the executable.
        assert!(stage(st.name).exists());
    }
    let bad = std::process::Command::new(exe)
        .arg("nope")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"nope\" is not a stage"));
}
