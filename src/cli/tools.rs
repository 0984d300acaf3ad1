//! `cec tools`: helpers that need no server. `tools hash --file F` prints the Cells block
//! hash (`x-cells-hash`, cells-api.md §6.8) of a local file, so users can compare it with the
//! "Internal Hash" column of `cec ls -d`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;

#[derive(Debug, Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    pub command: ToolsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Compute the Cells internal hash (x-cells-hash) of a local file
    Hash(HashArgs),
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// The local file to hash
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
}

pub fn run_tools(args: ToolsArgs) -> Result<(), CliError> {
    match args.command {
        ToolsCommand::Hash(h) => {
            let meta = std::fs::metadata(&h.file).map_err(|e| {
                let msg = format!("cannot read {}: {e}", h.file.display());
                if e.kind() == std::io::ErrorKind::NotFound {
                    CliError::not_found(msg)
                } else {
                    CliError::failure(msg)
                }
            })?;
            if meta.is_dir() {
                return Err(CliError::usage(format!(
                    "{} is a folder: give a file",
                    h.file.display()
                )));
            }
            let hash = crate::hash::block_hash_file(&h.file)
                .map_err(|e| CliError::failure(format!("cannot read {}: {e}", h.file.display())))?;
            println!("{hash}");
            Ok(())
        }
    }
}
