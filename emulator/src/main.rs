//! The `cells-emu` binary: `serve` runs the emulator until interrupted; `admin user token`
//! mints a Personal Access Token in a data directory, like `cells admin user token`.
//!
//! Invariant: the binary prints the URL it serves only once the listener is bound, and a
//! minted token goes to stdout only (never to logs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cells_emu::EmuConfig;
use cells_emu::auth::{Auth, PatExpiry};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cells-emu",
    version,
    about = "An emulator of a Pydio Cells v4.4 server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve REST /a, S3 /io, OIDC /oidc and /ws/event until interrupted.
    Serve(ServeArgs),
    /// Administration commands working on a data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A user as LOGIN:PASSWORD (repeatable).
    #[arg(long = "user", value_name = "LOGIN:PASSWORD", required = true)]
    users: Vec<String>,
    /// A login with the admin profile (repeatable).
    #[arg(long = "admin", value_name = "LOGIN")]
    admins: Vec<String>,
    /// Seed sample content on a fresh data directory.
    #[arg(long)]
    sample: bool,
    /// Enable fault injection (control endpoint and rules).
    #[arg(long)]
    faults: bool,
    /// How long move/copy/delete/restore jobs take.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    job_delay: Duration,
    /// Lifetime of OAuth access tokens.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// User administration.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Mint a Personal Access Token and print it.
    Token(TokenArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("expiry").required(true).args(["expire", "auto"])))]
struct TokenArgs {
    /// The user's login.
    #[arg(short = 'u', long = "user")]
    user: String,
    /// Hard expiry (e.g. 24h, 90d).
    #[arg(short = 'e', long = "expire", value_parser = parse_duration_or_secs)]
    expire: Option<Duration>,
    /// Sliding expiry window, renewed at each use (seconds, or a duration like 10m).
    #[arg(short = 'a', long = "auto", value_parser = parse_duration_or_secs)]
    auto: Option<Duration>,
    /// Data directory of the emulator.
    #[arg(long)]
    data: PathBuf,
}

fn parse_duration_or_secs(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Admin {
            command:
                AdminCommand::User {
                    command: UserCommand::Token(args),
                },
        } => {
            let auth = Auth::open_data_dir(&args.data)?;
            let expiry = match (args.expire, args.auto) {
                (Some(d), _) => PatExpiry::Fixed(d),
                (None, Some(w)) => PatExpiry::AutoRefresh(w),
                (None, None) => unreachable!("clap requires one of -e/-a"),
            };
            let token = auth.mint_pat(&args.user, expiry)?;
            println!("{token}");
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut users = Vec::new();
    for u in &args.users {
        let (login, password) = u
            .split_once(':')
            .with_context(|| "--user takes LOGIN:PASSWORD".to_string())?;
        anyhow::ensure!(!login.is_empty(), "--user: empty login");
        users.push((login.to_string(), password.to_string()));
    }
    let config = EmuConfig {
        data_dir: args.data,
        listen: args.listen,
        users,
        admins: args.admins,
        sample: args.sample,
        faults: args.faults,
        job_delay: args.job_delay,
        access_token_ttl: args.token_ttl,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let emu = cells_emu::start(config).await?;
        println!("cells-emu listening on {}", emu.url);
        tokio::signal::ctrl_c().await?;
        emu.stop().await;
        Ok(())
    })
}
