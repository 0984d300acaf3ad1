//! The `mount.cec` helper: what `mount -t cec SOURCE DIR -o OPTIONS`, `/etc/fstab` lines and
//! systemd `.mount`/`.automount` units run. `mount(8)` calls `/sbin/mount.cec SOURCE DIR
//! [-sfnv] [-o OPTIONS]`; this module turns that into the equivalent `cec mount --daemon`
//! command line and replaces the process with it, so the helper returns (exit 0) only once
//! the mount answers, and with the daemon's own error otherwise, as mount helpers must.
//!
//! SOURCE is a server URL (`https://cells.example.com`, with `token_file=` or the
//! `cec-token` systemd credential), a stored profile id (`alice@cells.example.com:443`), or
//! one of `cec`, `cells`, `default`, `none` for the active profile.
//!
//! Invariants: no secret ever reaches the new command line (tokens are passed as file paths,
//! `token_file=` or `credential=`); options that belong to `mount(8)`/systemd (`_netdev`,
//! `nofail`, `noauto`, `x-systemd.*`, ...) are accepted and ignored; any other unknown option
//! is an error (a typo must not silently mount something else).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{CliError, EXIT_USAGE};

/// The file names under which the binary acts as the mount helper (`mount_cec` is the
/// spelling macOS's mount(8) looks for).
const HELPER_NAMES: [&str; 3] = ["mount.cec", "mount.fuse.cec", "mount_cec"];

/// When the program was started as `mount.cec` (a link to `cec`), run the helper and return
/// its exit code; otherwise `None` (run the normal command line).
pub fn main_if_mount_helper() -> Option<ExitCode> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0)
        .file_name()?
        .to_str()?
        .to_string();
    if !HELPER_NAMES.contains(&name.as_str()) {
        return None;
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    Some(run_helper(&args))
}

fn run_helper(args: &[OsString]) -> ExitCode {
    let invocation = match parse_invocation(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("mount.cec: {}", e.message);
            eprintln!(
                "usage: mount.cec SOURCE MOUNTPOINT [-o OPTION[,OPTION...]] (see `cec mount --help`)"
            );
            return ExitCode::from(e.code);
        }
    };
    let cec_args = match invocation.cec_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mount.cec: {}", e.message);
            return ExitCode::from(e.code);
        }
    };
    if invocation.verbose || invocation.fake {
        let shown: Vec<String> = cec_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        eprintln!("mount.cec: cec {}", shown.join(" "));
    }
    if invocation.fake {
        return ExitCode::SUCCESS;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("mount.cec: cannot locate the cec executable: {e}");
            return ExitCode::from(super::EXIT_ERROR);
        }
    };
    // Become `cec mount --daemon ...`: it forks the mount, waits until it answers, and exits
    // with 0 or the mount's error.
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe)
        .arg0("cec")
        .args(&cec_args)
        .exec();
    eprintln!("mount.cec: cannot run cec: {err}");
    ExitCode::from(super::EXIT_ERROR)
}

/// One `mount.cec` call, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HelperInvocation {
    pub source: String,
    pub mountpoint: PathBuf,
    /// `-o` options in order (several `-o` are joined).
    pub options: Vec<String>,
    /// `-f`: do everything but mount.
    pub fake: bool,
    /// `-v`.
    pub verbose: bool,
}

/// Parse `SOURCE MOUNTPOINT [-sfnvrw] [-o OPTIONS] [-t TYPE]` in any order, as `mount(8)`
/// and `systemd-mount` call helpers.
pub fn parse_invocation(args: &[OsString]) -> Result<HelperInvocation, CliError> {
    let mut inv = HelperInvocation::default();
    let mut positional: Vec<OsString> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_string_lossy().into_owned();
        if arg == "-o" || arg == "-t" || arg == "-N" {
            let value = args
                .get(i + 1)
                .ok_or_else(|| CliError::usage(format!("{arg} needs a value")))?
                .to_string_lossy()
                .into_owned();
            if arg == "-o" {
                inv.options.extend(split_options(&value));
            } else if arg == "-t" {
                check_type(&value)?;
            } else {
                return Err(CliError::usage(format!(
                    "-N {value}: mount.cec cannot mount in another mount namespace; run it inside that namespace (nsenter) instead"
                )));
            }
            i += 2;
            continue;
        }
        if let Some(value) = arg.strip_prefix("-o").filter(|_| arg.len() > 2) {
            inv.options.extend(split_options(value));
        } else if let Some(value) = arg.strip_prefix("-t").filter(|_| arg.len() > 2) {
            check_type(value)?;
        } else if arg.starts_with('-') && arg.len() > 1 {
            for flag in arg[1..].chars() {
                match flag {
                    'f' => inv.fake = true,
                    'v' => inv.verbose = true,
                    // sloppy, no mtab, read-write: nothing to do.
                    's' | 'n' | 'w' | 'i' => {}
                    'r' => inv.options.push("ro".into()),
                    other => {
                        return Err(CliError::usage(format!("unknown flag -{other}")));
                    }
                }
            }
        } else {
            positional.push(args[i].clone());
        }
        i += 1;
    }
    let [source, mountpoint] = <[OsString; 2]>::try_from(positional).map_err(|p| {
        CliError::usage(format!(
            "expected SOURCE and MOUNTPOINT, got {} argument(s)",
            p.len()
        ))
    })?;
    inv.source = source.to_string_lossy().into_owned();
    inv.mountpoint = PathBuf::from(mountpoint);
    Ok(inv)
}

fn check_type(t: &str) -> Result<(), CliError> {
    match t {
        "cec" | "fuse.cec" | "fuse" => Ok(()),
        other => Err(CliError::usage(format!(
            "filesystem type {other:?} is not cec"
        ))),
    }
}

/// Split `a,b=c,d` (no escaping: option values never contain commas here).
fn split_options(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect()
}

/// Options that `mount(8)`, fstab and systemd own; the helper accepts and ignores them.
fn is_generic_option(name: &str) -> bool {
    matches!(
        name,
        "_netdev"
            | "auto"
            | "noauto"
            | "nofail"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "defaults"
            | "rw"
            | "exec"
            | "noexec"
            | "suid"
            | "nosuid"
            | "dev"
            | "nodev"
            | "atime"
            | "noatime"
            | "relatime"
            | "strictatime"
            | "nodiratime"
            | "diratime"
            | "sync"
            | "async"
            | "comment"
    ) || name.starts_with("x-")
        || name.starts_with("comment=")
}

/// SOURCE values meaning "the active profile".
const ACTIVE_PROFILE_SOURCES: [&str; 4] = ["cec", "cells", "default", "none"];

impl HelperInvocation {
    /// The `cec` command line (without the program name) that does this mount.
    pub fn cec_args(&self) -> Result<Vec<OsString>, CliError> {
        let mut global: Vec<OsString> = Vec::new();
        let mut mount: Vec<OsString> = vec!["mount".into(), self.mountpoint.clone().into()];
        let mut foreground = false;
        let mut token_file: Option<PathBuf> = None;
        let mut url: Option<String> = None;
        let mut profile: Option<String> = None;

        let source = self.source.trim();
        if source.starts_with("https://") || source.starts_with("http://") {
            url = Some(source.to_string());
        } else if !ACTIVE_PROFILE_SOURCES.contains(&source) && !source.is_empty() {
            profile = Some(source.to_string());
        }

        for option in &self.options {
            let (name, value) = match option.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (option.as_str(), None),
            };
            let need = |v: Option<&str>| -> Result<String, CliError> {
                v.filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| CliError::usage(format!("option {name} needs a value")))
            };
            let mut flag_with_value = |flag: &str, v: Option<&str>| -> Result<(), CliError> {
                mount.push(flag.into());
                mount.push(need(v)?.into());
                Ok(())
            };
            match name {
                "ro" => mount.push("--read-only".into()),
                "allow_other" => mount.push("--allow-other".into()),
                "allow_non_empty" | "nonempty" => mount.push("--allow-non-empty".into()),
                "permanent_delete" => mount.push("--permanent-delete".into()),
                "links" => mount.push("--links".into()),
                "no_events" => mount.push("--no-events".into()),
                "uid" => flag_with_value("--uid", value)?,
                "gid" => flag_with_value("--gid", value)?,
                "file_mode" => flag_with_value("--file-mode", value)?,
                "dir_mode" => flag_with_value("--dir-mode", value)?,
                "cache_dir" => flag_with_value("--cache-dir", value)?,
                "cache_size" => flag_with_value("--cache-size", value)?,
                "attr_timeout" => flag_with_value("--attr-timeout", value)?,
                "dir_cache_time" => flag_with_value("--dir-cache-time", value)?,
                "events_cache_time" => flag_with_value("--events-cache-time", value)?,
                "write_back" => flag_with_value("--write-back", value)?,
                "conflicts" => flag_with_value("--conflicts", value)?,
                "request_timeout" => flag_with_value("--request-timeout", value)?,
                "transfer_timeout" => flag_with_value("--transfer-timeout", value)?,
                "min_transfer_rate" => flag_with_value("--min-transfer-rate", value)?,
                "foreground" => foreground = true,
                "profile" => profile = Some(need(value)?),
                "url" => {
                    let given = need(value)?;
                    let same =
                        |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
                    if let Some(source) = &url
                        && !same(source, &given)
                    {
                        return Err(CliError::usage(format!(
                            "option url={given} differs from the source {source}: give the server once"
                        )));
                    }
                    url = Some(given);
                }
                "config" => {
                    global.push("--config".into());
                    global.push(need(value)?.into());
                }
                "token_file" => token_file = Some(PathBuf::from(need(value)?)),
                "credential" => {
                    let name = need(value)?;
                    let path = super::credentials::credential_path(&name)?.ok_or_else(|| {
                        CliError::usage(format!(
                            "credential={name}: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit, or token_file=)"
                        ))
                    })?;
                    token_file = Some(path);
                }
                "skip_verify" => global.push("--skip-verify".into()),
                "skip_keyring" => global.push("--skip-keyring".into()),
                "log" => {
                    global.push("--log".into());
                    global.push(need(value)?.into());
                }
                "token" | "password" => {
                    return Err(CliError::usage(format!(
                        "option {name}= would put a secret where every user can read it (fstab, the process list): use token_file= or credential="
                    )));
                }
                other if is_generic_option(other) => {}
                other => {
                    return Err(CliError {
                        message: format!("unknown option {other:?} (see mount.cec(8))"),
                        code: EXIT_USAGE,
                    });
                }
            }
        }
        if url.is_some() && profile.is_some() {
            return Err(CliError::usage(
                "give either a server URL or a profile, not both",
            ));
        }
        if let Some(url) = url {
            global.push("--url".into());
            global.push(url.into());
        }
        if let Some(profile) = profile {
            global.push("--profile".into());
            global.push(profile.into());
        }
        if let Some(path) = token_file {
            global.push("--token-file".into());
            global.push(path.into());
        }
        if !foreground {
            mount.push("--daemon".into());
        }
        global.extend(mount);
        Ok(global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_url_option_other_than_the_source_and_a_namespace_are_refused() {
        // Issue 23: "a url= option silently overrides the SOURCE URL (refuse when they
        // differ); -N is accepted and ignored (refuse it or honour it)".
        let inv = parse_invocation(&os(&[
            "https://cells.example.com",
            "/m",
            "-o",
            "url=https://evil.example.com,token_file=/t",
        ]))
        .unwrap();
        let err = inv.cec_args().unwrap_err();
        assert!(
            err.message.contains("differs from the source"),
            "{}",
            err.message
        );
        let same = parse_invocation(&os(&[
            "https://cells.example.com",
            "/m",
            "-o",
            "url=https://cells.example.com/,token_file=/t",
        ]))
        .unwrap();
        assert!(same.cec_args().is_ok());
        let err = parse_invocation(&os(&["https://c", "/m", "-N", "/proc/1/ns/mnt"])).unwrap_err();
        assert!(err.message.contains("-N"), "{}", err.message);
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_links_option_becomes_the_links_flag() {
        let inv = parse_invocation(&os(&[
            "https://cells.example.com",
            "/mnt/cells",
            "-o",
            "links,token_file=/t",
        ]))
        .unwrap();
        let args = strings(inv.cec_args().unwrap());
        assert!(args.iter().any(|a| a == "--links"), "{args:?}");
    }

    #[test]
    fn fstab_deadlines_become_cec_flags() {
        let inv = parse_invocation(&os(&[
            "https://cells.example.com",
            "/mnt/cells",
            "-o",
            "request_timeout=10s,transfer_timeout=1m,min_transfer_rate=4K",
        ]))
        .unwrap();
        let args = strings(inv.cec_args().unwrap());
        let flags = args.join(" ");
        assert!(
            flags.contains("--request-timeout 10s --transfer-timeout 1m --min-transfer-rate 4K"),
            "{flags}"
        );
    }

    #[test]
    fn the_conflicts_option_becomes_the_cec_flag() {
        let inv = parse_invocation(&os(&["cec", "/mnt/c", "-o", "conflicts=fail"])).unwrap();
        let args = strings(inv.cec_args().unwrap());
        let at = args.iter().position(|a| a == "--conflicts").expect("flag");
        assert_eq!(args[at + 1], "fail");
        let inv = parse_invocation(&os(&["cec", "/mnt/c", "-o", "conflicts"])).unwrap();
        assert!(inv.cec_args().is_err(), "a value is required");
    }

    #[test]
    fn fstab_options_become_cec_flags() {
        let inv = parse_invocation(&os(&[
            "https://cells.example.com",
            "/mnt/cells",
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,allow_other,nonempty,uid=1000,gid=100,cache_dir=/var/cache/cec,token_file=/etc/cec/t",
        ]))
        .unwrap();
        assert_eq!(inv.mountpoint, PathBuf::from("/mnt/cells"));
        let args = strings(inv.cec_args().unwrap());
        assert_eq!(
            args,
            [
                "--url",
                "https://cells.example.com",
                "--token-file",
                "/etc/cec/t",
                "mount",
                "/mnt/cells",
                "--allow-other",
                "--allow-non-empty",
                "--uid",
                "1000",
                "--gid",
                "100",
                "--cache-dir",
                "/var/cache/cec",
                "--daemon"
            ]
        );
    }

    #[test]
    fn a_profile_source_and_flags_in_any_order() {
        let inv = parse_invocation(&os(&[
            "-n",
            "-oro",
            "alice@cells.example.com:443",
            "-t",
            "cec",
            "/mnt/x",
            "-o",
            "foreground",
        ]))
        .unwrap();
        let args = strings(inv.cec_args().unwrap());
        assert_eq!(
            args,
            [
                "--profile",
                "alice@cells.example.com:443",
                "mount",
                "/mnt/x",
                "--read-only"
            ]
        );
        let active = parse_invocation(&os(&["cec", "/mnt/x"])).unwrap();
        assert_eq!(
            strings(active.cec_args().unwrap()),
            ["mount", "/mnt/x", "--daemon"]
        );
    }

    #[test]
    fn secrets_typos_and_foreign_types_are_refused() {
        let secret = parse_invocation(&os(&["cec", "/m", "-o", "token=abc"])).unwrap();
        let err = secret.cec_args().unwrap_err();
        assert!(!err.message.contains("abc"), "{}", err.message);
        let typo = parse_invocation(&os(&["cec", "/m", "-o", "alow_other"])).unwrap();
        assert!(typo.cec_args().unwrap_err().message.contains("alow_other"));
        assert!(parse_invocation(&os(&["cec", "/m", "-t", "nfs"])).is_err());
        assert!(parse_invocation(&os(&["/m"])).is_err());
        let both = parse_invocation(&os(&["https://h", "/m", "-o", "profile=a@h:443"])).unwrap();
        assert!(both.cec_args().is_err());
    }
}
