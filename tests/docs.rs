//! The option docs against the binaries: every flag a stage's `--help`
//! lists is written in that stage's section of docs/options.md, every flag
//! a table row there names exists in the stage's `--help`, and every flag
//! README's stage overview names exists. A flag added, renamed or removed
//! without its documentation fails here.

use crate::common;

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

/// The flags and make variables that do not change a result are the
/// library's one list, `RESULT_NEUTRAL_FIELDS` (what the checkpoint
/// fingerprint leaves out): a training stage's `--print-key`, which
/// pipelines/stage.sh keys a run by, leaves out exactly these, and the
/// Makefile names a run by none of their variables.
#[test]
fn the_pipelines_leave_out_exactly_the_result_neutral_settings() {
    use tsimcne_format::model_config::RESULT_NEUTRAL_FIELDS;
    let neutral: Vec<String> = RESULT_NEUTRAL_FIELDS
        .iter()
        .map(|f| format!("--{}", f.replace('_', "-")))
        .collect();
    for name in ["pretrain", "project", "finetune"] {
        let mut args = vec!["--images", "a.parquet", "--out", "o", "--seed", "3"];
        if name != "pretrain" {
            args.extend(["--from", "p"]);
        }
        let key = |extra: &[&str]| {
            let mut a = args.clone();
            a.extend(extra);
            a.push("--print-key");
            let r = run(name, &a);
            assert!(r.ok(), "{name} {a:?}: {}", r.stderr);
            r.stdout
        };
        let plain = key(&[]);
        // Every setting, defaults included, and none of the neutral ones.
        assert!(
            plain.contains("--seed=3\n") && plain.contains("--batch-size=512\n"),
            "{name}: {plain}"
        );
        assert!(plain.contains("--epochs="), "{name}: {plain}");
        for f in &neutral {
            assert!(!plain.contains(&format!("{f}=")), "{name}: {f} in {plain}");
        }
        for f in [
            "--images=",
            "--out=",
            "--from=",
            "--restart=",
            "--print-key=",
        ] {
            assert!(!plain.contains(f), "{name}: {f} in {plain}");
        }
        // The neutral settings, other paths and --restart leave it alone;
        // a setting that changes the result changes it.
        let same = key(&[
            "--threads",
            "1",
            "--checkpoint-every",
            "3",
            "--device",
            "cpu",
            "--conv-math",
            "tf32",
            "--restart",
        ]);
        assert_eq!(plain, same, "{name}");
        assert_ne!(plain, key(&["--batch-size", "64"]), "{name}");
    }
    // stage.sh asks the stage and keeps no list of its own.
    let script = read("pipelines/stage.sh");
    assert!(script.contains("--print-key"));
    for f in &neutral {
        assert!(!script.contains(f.as_str()), "pipelines/stage.sh names {f}");
    }
    // Makefile: none of the variables is in RUN_VARS, and the comments that
    // name the neutral settings name every one of them.
    let makefile = read("Makefile");
    let vars: Vec<String> = RESULT_NEUTRAL_FIELDS
        .iter()
        .map(|f| f.to_uppercase())
        .collect();
    let run_vars = makefile
        .split("RUN_VARS :=")
        .nth(1)
        .and_then(|r| r.split("\nEVAL_VARS").next())
        .expect("Makefile: RUN_VARS");
    let names: BTreeSet<&str> = run_vars
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter(|w| !w.is_empty())
        .collect();
    for v in &vars {
        assert!(!names.contains(v.as_str()), "Makefile: RUN_VARS holds {v}");
    }
    // A comment that names several neutral settings (a list of what does not
    // change a result) names them all.
    let mut paragraphs = vec![String::new()];
    for line in makefile.lines() {
        match line.strip_prefix('#') {
            Some(text) => paragraphs.last_mut().unwrap().push_str(text),
            None => paragraphs.push(String::new()),
        }
    }
    let naming: Vec<&String> = paragraphs
        .iter()
        .filter(|p| vars.iter().filter(|v| p.contains(v.as_str())).count() > 1)
        .collect();
    assert!(
        !naming.is_empty(),
        "Makefile: no comment names the neutral settings"
    );
    for p in naming {
        for v in &vars {
            assert!(
                p.contains(v.as_str()),
                "Makefile comment leaves out {v}:{p}"
            );
        }
    }
}
