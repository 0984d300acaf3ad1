//! `cec doc`: Markdown pages or man pages generated from the clap definition, one per command
//! (`cec.md`, `cec-config-add.md`, ... or `cec.1`, `cec-config-add.1`, ...).

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, CliError};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocFormat {
    Markdown,
    Man,
}

#[derive(Debug, Args)]
pub struct DocArgs {
    /// Output format
    #[arg(long, short = 'f', value_enum, default_value = "markdown")]
    pub format: DocFormat,
    /// Directory to write the pages into (created if missing)
    #[arg(long, short = 'o', default_value = "docs/cli")]
    pub out: PathBuf,
}

pub fn run_doc(args: DocArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", args.out.display())))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    walk(&cmd, "cec", &args.out, args.format, &mut written)?;
    println!("Wrote {written} pages to {}", args.out.display());
    Ok(())
}

fn walk(
    cmd: &clap::Command,
    name: &str,
    out: &Path,
    format: DocFormat,
    written: &mut usize,
) -> Result<(), CliError> {
    let write_err = |p: &Path, e: std::io::Error| {
        CliError::failure(format!("cannot write {}: {e}", p.display()))
    };
    match format {
        DocFormat::Markdown => {
            let path = out.join(format!("{name}.md"));
            std::fs::write(&path, markdown(cmd, name)).map_err(|e| write_err(&path, e))?;
        }
        DocFormat::Man => {
            let path = out.join(format!("{name}.1"));
            let mut buf = Vec::new();
            let page = cmd.clone().name(leak(name.to_string()));
            clap_mangen::Man::new(page)
                .render(&mut buf)
                .map_err(|e| write_err(&path, e))?;
            std::fs::write(&path, buf).map_err(|e| write_err(&path, e))?;
        }
    }
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(
            sub,
            &format!("{name}-{}", sub.get_name()),
            out,
            format,
            written,
        )?;
    }
    Ok(())
}

fn markdown(cmd: &clap::Command, name: &str) -> String {
    let mut c = cmd.clone().name(leak(name.replace('-', " ")));
    let help = c.render_long_help().to_string();
    let mut md = format!("# {}\n\n", name.replace('-', " "));
    if let Some(about) = cmd.get_about() {
        md.push_str(&format!("{about}\n\n"));
    }
    md.push_str("```text\n");
    md.push_str(help.trim_end());
    md.push_str("\n```\n");
    let subs: Vec<_> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        md.push_str("\n## Subcommands\n\n");
        for s in subs {
            md.push_str(&format!(
                "- [{} {}]({}-{}.md): {}\n",
                name.replace('-', " "),
                s.get_name(),
                name,
                s.get_name(),
                s.get_about().map(|a| a.to_string()).unwrap_or_default()
            ));
        }
    }
    md
}

/// clap wants `'static` names; doc generation runs once per process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
