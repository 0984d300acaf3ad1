//! Every `cec` command the documentation shows in a code block is one the CLI accepts: its
//! subcommand exists and every flag it spells parses (`cec ARGS --help` exits 0; clap
//! rejects an unknown flag even when `--help` follows, with exit 2). Catches docs that drift
//! from the CLI (issue 26: `cec mount status`, which mounts on `./status`, was such a slip).

mod common;

use std::path::Path;
use std::process::Command;

/// The `cec ...` command lines of the fenced code blocks of a Markdown file (comments cut,
/// continuation lines joined, `sudo` dropped, pipelines and `&&` chains split).
fn documented_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split(" #").next().unwrap_or("").trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        for part in full.split(['|', ';']).flat_map(|p| p.split("&&")) {
            let part = part.trim().trim_start_matches("$ ");
            let part = part.strip_prefix("sudo ").unwrap_or(part).trim();
            if part.starts_with("cec ") {
                commands.push(part.to_string());
            }
        }
    }
    commands
}

/// Split a command line as a shell would for these simple lines (single and double quotes).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn the_parser_finds_commands_in_code_blocks_only() {
    let doc = "cec ls outside\n```sh\ncec ls personal-files   # a comment\nsudo cec mount \\\n  --daemon ~/x\necho hi | cec ls a && cec info\n```\n";
    assert_eq!(
        documented_commands(doc),
        vec![
            "cec ls personal-files",
            "cec mount    --daemon ~/x",
            "cec ls a",
            "cec info"
        ]
    );
    assert_eq!(words("cec 'a b' c"), vec!["cec", "a b", "c"]);
}

#[test]
fn every_command_the_docs_show_is_accepted_by_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("emulator/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in documented_commands(&text) {
            let args = words(&line);
            let out = Command::new(common::cec_bin())
                .args(&args[1..])
                .arg("--help")
                .env_remove("CEC_URL")
                .env_remove("CEC_TOKEN")
                .output()
                .unwrap();
            checked += 1;
            if !out.status.success() {
                wrong.push(format!(
                    "{}: `{line}`: {}",
                    file.strip_prefix(root).unwrap().display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} documented commands found: the parser lost them"
    );
    assert!(
        wrong.is_empty(),
        "documented commands the CLI refuses:\n{}",
        wrong.join("\n")
    );
}
