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

/// README's overview of the stages credits each flag to a stage that has
/// it: a command line of its example block to the stage it starts with, a
/// bullet to the stages it names in bold (`- **`pretrain`**, …`), any other
/// line to some stage.
#[test]
fn readme_names_only_real_flags_of_their_stages() {
    let readme = read("README.md");
    let text = section(&readme, "## The stages");
    let own: std::collections::BTreeMap<&str, BTreeSet<String>> = tsimcne_cli::stages::STAGES
        .iter()
        .map(|s| (s.name, help_flags(s.name)))
        .collect();
    let extra = ["--help", "--link-stages", "--path"].map(String::from);
    let any: BTreeSet<String> = own.values().flatten().cloned().chain(extra).collect();
    let mut problems = Vec::new();
    let mut check = |line: &str, stages: &[&str]| {
        let offered: BTreeSet<&String> = if stages.is_empty() {
            any.iter().collect()
        } else {
            stages.iter().flat_map(|s| &own[s]).collect()
        };
        for f in flags(line) {
            if !offered.contains(&f) {
                let whose = if stages.is_empty() {
                    "any stage".to_string()
                } else {
                    stages.join(", ")
                };
                problems.push(format!("{f} is not a flag of {whose}: {line}"));
            }
        }
    };
    let (mut in_code, mut code_stage, mut bullet) = (false, None::<&str>, Vec::<&str>::new());
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            code_stage = None;
            continue;
        }
        if in_code {
            // A command line, or the continuation of the one before (`\`).
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some(st) = own.keys().find(|s| **s == first) {
                code_stage = Some(st);
            }
            let command = line.split(" # ").next().unwrap_or(line);
            check(command, code_stage.as_slice());
            continue;
        }
        if line.starts_with("- ") {
            bullet = own
                .keys()
                .copied()
                .filter(|s| {
                    let lead = line.split([':', '(']).next().unwrap_or("");
                    lead.contains(&format!("**`{s}`**"))
                })
                .collect();
        } else if !line.starts_with("  ") {
            bullet.clear();
        }
        check(line, &bullet);
    }
    assert!(
        problems.is_empty(),
        "README's section \"The stages\":\n{}",
        problems.join("\n")
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
            "--gpu-path",
            "next",
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

/// Every `make TARGET` that README.md, docs/ and bench/README.md name is a
/// target that `make help` lists (`make help` is the one list of targets):
/// by name, or as `<dataset>-<stage>` / `<dataset>-dir` of its listed
/// datasets and stages.
#[test]
fn the_docs_name_only_targets_that_make_help_lists() {
    let root = common::repo_root();
    let out = std::process::Command::new("make")
        .args(["--no-print-directory", "-C"])
        .arg(&root)
        .arg("help")
        .output()
        .expect("make");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect()
    };
    // `make NAME` at a line's start, and the names in a line's parentheses
    // (`make bench  … (bench-prep, bench-train, …)`).
    let mut listed = BTreeSet::from(["help".to_string()]);
    for line in help.lines() {
        if let Some(rest) = line.strip_prefix("make ") {
            listed.insert(word(rest));
        }
        if let (Some(a), Some(b)) = (line.find('('), line.rfind(')')) {
            listed.extend(
                line[a + 1..b]
                    .split([',', ' '])
                    .map(word)
                    .filter(|w| !w.is_empty()),
            );
        }
    }
    let datasets = ["cifar10", "cifar100", "fashion-mnist", "demo", "tiny"];
    assert!(datasets.iter().all(|d| listed.contains(*d)), "{help}");
    let stage_line = help
        .lines()
        .find(|l| l.starts_with("make <dataset>-<stage>"))
        .expect("make help lists <dataset>-<stage>");
    let known = |t: &str| {
        listed.contains(t)
            || datasets.iter().any(|d| {
                t.strip_prefix(d)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|s| {
                        s == "dir"
                            || stage_line.contains(&format!(" {s}"))
                            || stage_line.contains(&format!("({s}"))
                    })
            })
    };
    let mut docs = vec![root.join("README.md"), root.join("bench/README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let mut unknown = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, _) in text.match_indices("`make ") {
            let t = word(&text[i + 6..]);
            // Flags (`make -n cifar10`) and variables are not targets.
            if !t.is_empty() && !t.starts_with('-') && !known(&t) {
                unknown.push(format!("{}: make {t}", doc.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "targets that make help does not list:\n{}",
        unknown.join("\n")
    );
}
