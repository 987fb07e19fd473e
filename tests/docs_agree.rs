//! The README, the operations guide and the deploy files must agree with the CLI definition (what
//! `--help` prints): every flag named exists, every command's synopsis lists all its flags, every
//! documented default is the real one, and every HANDOVER_* variable named is one the binary reads.

use clap::CommandFactory;
use handover::cli::Cli;
use std::collections::{BTreeMap, BTreeSet};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Per subcommand: long flag → default value (if any).
fn cli_flags() -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let cli = Cli::command();
    cli.get_subcommands()
        .map(|sub| {
            let flags = sub
                .get_arguments()
                .filter_map(|arg| {
                    let long = arg.get_long()?;
                    if matches!(long, "help" | "version" | "log-format") {
                        return None;
                    }
                    let default = arg
                        .get_default_values()
                        .first()
                        .map(|v| v.to_string_lossy().into_owned());
                    Some((long.to_string(), default))
                })
                .collect();
            (sub.get_name().to_string(), flags)
        })
        .collect()
}

fn env_vars() -> BTreeSet<String> {
    let cli = Cli::command();
    let mut vars: BTreeSet<String> = cli
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments().collect::<Vec<_>>())
        .chain(cli.get_arguments())
        .filter_map(|arg| arg.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    // Read by the test and bench harnesses, not by the binary.
    vars.insert("HANDOVER_TEST_POSTGRES".into());
    vars.insert("HANDOVER_BIN".into());
    vars.insert("HANDOVER_CHAOS_SEED".into());
    // Set by handover for exec children (SPEC §6), not read by it.
    for for_children in [
        "HANDOVER_JOB_ID",
        "HANDOVER_ATTEMPT",
        "HANDOVER_CHECKPOINT",
        "HANDOVER_CHECKPOINT_FD",
    ] {
        vars.insert(for_children.into());
    }
    // Injected by Kubernetes service links for a Service named `handover` (the manifest turns them
    // off; the guide explains why).
    for injected in [
        "HANDOVER_PORT",
        "HANDOVER_SERVICE_HOST",
        "HANDOVER_SERVICE_PORT",
    ] {
        vars.insert(injected.into());
    }
    vars
}

fn flags_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at + 2;
        // A flag is lowercase words joined by single hyphens; a "--" starts something else.
        let rest = &text[start..];
        let end = start
            + rest
                .char_indices()
                .find(|&(at, c)| {
                    !(c.is_ascii_lowercase() || c == '-') || rest[at..].starts_with("--")
                })
                .map_or(rest.len(), |(at, _)| at);
        let before_ok = i + at == 0
            || !(bytes[i + at - 1].is_ascii_alphanumeric() || bytes[i + at - 1] == b'#');
        let flag = text[start..end].trim_end_matches('-');
        if before_ok && flag.len() > 1 && flag.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(flag.to_string());
        }
        i = end.max(start);
    }
    found
}

fn env_names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .map(|w| w.trim_end_matches('_'))
        .filter(|w| w.starts_with("HANDOVER_") && w.len() > "HANDOVER_".len())
        .map(str::to_string)
        .collect()
}

/// Flags that are not handover's (other tools' flags quoted in the docs).
const FOREIGN_FLAGS: &[&str] = &[
    "pause-ms",
    "path",
    "open",
    "no-deps",
    "example",
    "skip-systemctl-redirect",
    "pid",
    "fork",
    "mount-proc",
    "release",
    "locked",
    "bench",
    "test",
    "no-capture",
    "test-threads",
    "strict",
    "prefix",
    "headless",
    "no-sandbox",
    "disable-gpu",
    "disable-background-networking",
    "no-install-recommends",
    "kill-child",
    "all-targets",
    "check",
    "doc",
    "no-fail-fast",
    "mode",
    "lib",
    "bin",
    "edition",
    "no-run",
    "workspace",
    "previous",
    "failed",
    "force",
    "grace-period",
    "home-dir",
    "no-create-home",
    "no-log-init",
    "shell",
    "system",
    "uid",
    "gid",
    "rm",
    "now",
    "from",
];

#[test]
fn every_command_synopsis_in_the_readme_lists_exactly_its_flags() {
    let readme = read("README.md");
    let block_start = readme
        .find("```\nhandover worker")
        .expect("the CLI synopsis block");
    let block = &readme[block_start + 4..];
    let block = &block[..block.find("```").unwrap()];
    let mut per_command: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("handover ") {
            current = rest.split_whitespace().next().unwrap().to_string();
        }
        per_command
            .entry(current.clone())
            .or_default()
            .push_str(line);
    }
    let cli = cli_flags();
    for (command, flags) in &cli {
        let documented = flags_in(
            per_command
                .get(command)
                .unwrap_or_else(|| panic!("README has no synopsis for `handover {command}`")),
        );
        let real: BTreeSet<String> = flags.keys().cloned().collect();
        assert_eq!(
            documented, real,
            "README synopsis of `handover {command}` vs --help"
        );
    }
}

#[test]
fn the_readme_defaults_table_matches_the_cli() {
    let readme = read("README.md");
    let worker = &cli_flags()["worker"];
    let mut checked = 0;
    for line in readme.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let flag = cells[1].trim_matches('`').trim_start_matches("--");
        let default = cells[2];
        let real = worker.get(flag).unwrap_or_else(|| {
            panic!("README table names --{flag}, which the worker does not have")
        });
        if let Some(code) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            assert_eq!(real.as_deref(), Some(code), "README default of --{flag}");
            checked += 1;
        } else {
            assert!(
                real.is_none(),
                "--{flag} has default {real:?}; the README says {default:?}"
            );
        }
    }
    assert!(
        checked >= 6,
        "the defaults table was found ({checked} rows checked)"
    );
}

#[test]
fn docs_and_deploy_files_name_only_real_flags_and_variables() {
    let every_flag: BTreeSet<String> = cli_flags()
        .values()
        .flat_map(|flags| flags.keys().cloned())
        .chain([
            "log-format".to_string(),
            "help".to_string(),
            "version".to_string(),
        ])
        .collect();
    let vars = env_vars();
    for path in [
        "README.md",
        "docs/operations.md",
        "deploy/kubernetes/deployment.yaml",
        "deploy/systemd/handover.service",
        "deploy/systemd/handover.env.example",
        "Dockerfile",
    ] {
        let text = read(path);
        for flag in flags_in(&text) {
            assert!(
                every_flag.contains(&flag) || FOREIGN_FLAGS.contains(&flag.as_str()),
                "{path} names --{flag}, which handover does not have"
            );
        }
        for var in env_names_in(&text) {
            assert!(
                vars.contains(&var),
                "{path} names {var}, which handover does not read"
            );
        }
    }
}
