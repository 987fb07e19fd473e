//! The `exec` payload, `{"cmd": [PROGRAM, ARGS...], "env": {NAME: VALUE}, "cwd": PATH}`: read
//! with serde, then checked, each problem named in one line that starts "invalid exec payload".
//!
//! Serde reads the shape and refuses unknown fields; each field is kept as it came when it has
//! the wrong JSON type, so that the problems are reported in a fixed order (an unknown field,
//! then `cmd`, `env`, `cwd`) and in the protocol's own words, with the wrong value described.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Display;

/// Variables the worker sets for the child; a payload cannot override them.
const PROTOCOL_ENV: [&str; 4] = [
    "HANDOVER_JOB_ID",
    "HANDOVER_ATTEMPT",
    "HANDOVER_CHECKPOINT",
    "HANDOVER_CHECKPOINT_FD",
];

/// A validated `exec` payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecPayload {
    /// The program and its arguments.
    pub cmd: Vec<String>,
    /// Environment variables added to the child's.
    pub env: BTreeMap<String, String>,
    /// The working directory (the worker's when None).
    pub cwd: Option<String>,
}

const PAYLOAD_SHAPE: &str = r#"expected {"cmd": [PROGRAM, ARGS...], "env": {NAME: VALUE}, "cwd": PATH} (env and cwd optional)"#;

/// The payload as serde reads it. A missing field and `null` are both `None`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(default)]
    cmd: Option<Typed<Vec<Typed<String>>>>,
    #[serde(default)]
    env: Option<Typed<BTreeMap<String, Typed<String>>>>,
    #[serde(default)]
    cwd: Option<Typed<String>>,
}

/// The names of [`Fields`], for naming an unknown one.
const FIELDS: [&str; 3] = ["cmd", "env", "cwd"];

/// A value of the expected JSON type, or the value that came instead (never a serde error).
#[derive(Debug)]
enum Typed<T> {
    Is(T),
    Not(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match T::deserialize(&value) {
            Ok(typed) => Typed::Is(typed),
            Err(_) => Typed::Not(value),
        })
    }
}

/// Parses and checks a payload; the error names the problem and starts with "invalid exec payload".
pub fn parse_payload(payload: &Value) -> Result<ExecPayload, String> {
    parse_fields(payload).map_err(|e| format!("invalid exec payload: {e}"))
}

fn parse_fields(payload: &Value) -> Result<ExecPayload, String> {
    let Value::Object(given) = payload else {
        return Err(format!("got {}; {PAYLOAD_SHAPE}", describe(payload)));
    };
    // Every field takes any value, so an unknown field is all serde can refuse in an object.
    let fields = Fields::deserialize(payload).map_err(|err| {
        match given.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            Some(unknown) => format!("unknown field {unknown:?}; {PAYLOAD_SHAPE}"),
            None => format!("{err}; {PAYLOAD_SHAPE}"),
        }
    })?;
    Ok(ExecPayload {
        cmd: check_cmd(fields.cmd)?,
        env: check_env(fields.env)?,
        cwd: check_cwd(fields.cwd)?,
    })
}

fn check_cmd(cmd: Option<Typed<Vec<Typed<String>>>>) -> Result<Vec<String>, String> {
    let items = match cmd {
        None => return Err(format!("\"cmd\" is missing; {PAYLOAD_SHAPE}")),
        Some(Typed::Is(items)) => items,
        Some(Typed::Not(Value::String(line))) => {
            return Err(format!(
                "\"cmd\" must be an array [PROGRAM, ARGS...], not a string (for a shell command use [\"sh\", \"-c\", {line:?}])"
            ))
        }
        Some(Typed::Not(other)) => {
            return Err(format!(
                "\"cmd\" must be an array [PROGRAM, ARGS...], got {}",
                describe(&other)
            ))
        }
    };
    if items.is_empty() {
        return Err("\"cmd\" is empty; give at least the program to run".into());
    }
    let mut cmd = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        cmd.push(string(item, &format_args!("cmd[{index}]"))?);
    }
    if cmd[0].is_empty() {
        return Err("cmd[0], the program, is empty".into());
    }
    Ok(cmd)
}

fn check_env(
    env: Option<Typed<BTreeMap<String, Typed<String>>>>,
) -> Result<BTreeMap<String, String>, String> {
    let vars = match env {
        None => return Ok(BTreeMap::new()),
        Some(Typed::Is(vars)) => vars,
        Some(Typed::Not(other)) => {
            return Err(format!(
                "\"env\" must be an object of string values, got {}",
                describe(&other)
            ))
        }
    };
    let mut env = BTreeMap::new();
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("env name {name:?} is not a valid variable name"));
        }
        if PROTOCOL_ENV.contains(&name.as_str()) {
            return Err(format!(
                "env {name} is set by the worker and cannot be given"
            ));
        }
        let text = string(value, &format_args!("env {name}"))?;
        env.insert(name, text);
    }
    Ok(env)
}

/// A string the OS can pass on (no NUL byte); `what` names it in the error.
fn string(value: Typed<String>, what: &dyn Display) -> Result<String, String> {
    match value {
        Typed::Is(text) if text.contains('\0') => Err(format!("{what} contains a NUL byte")),
        Typed::Is(text) => Ok(text),
        Typed::Not(other) => Err(format!("{what} must be a string, got {}", describe(&other))),
    }
}

fn check_cwd(cwd: Option<Typed<String>>) -> Result<Option<String>, String> {
    match cwd {
        None => Ok(None),
        Some(Typed::Is(path)) if !path.is_empty() && !path.contains('\0') => Ok(Some(path)),
        Some(Typed::Is(path)) => Err(cwd_error(&Value::String(path))),
        Some(Typed::Not(other)) => Err(cwd_error(&other)),
    }
}

fn cwd_error(got: &Value) -> String {
    format!("\"cwd\" must be a non-empty path, got {}", describe(got))
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.is_empty() => "an empty string".into(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("a string ({:?}...)", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_payloads_parse() {
        let parsed = parse_payload(&json!({"cmd": ["python3", "job.py", "--n", "5"]})).unwrap();
        assert_eq!(parsed.cmd, ["python3", "job.py", "--n", "5"]);
        assert!(parsed.env.is_empty());
        assert_eq!(parsed.cwd, None);
        let full =
            parse_payload(&json!({"cmd": ["ls"], "env": {"X": "1", "EMPTY": ""}, "cwd": "/tmp"}))
                .unwrap();
        assert_eq!(full.env["X"], "1");
        assert_eq!(full.env["EMPTY"], "");
        assert_eq!(full.cwd.as_deref(), Some("/tmp"));
        assert!(parse_payload(&json!({"cmd": ["ls"], "env": null, "cwd": null})).is_ok());
    }

    #[test]
    fn bad_payloads_name_the_problem() {
        for (bad, says) in [
            (json!("ls"), "got a string"),
            (json!({}), "\"cmd\" is missing"),
            (json!({"cmd": []}), "\"cmd\" is empty"),
            (json!({"cmd": "ls -l"}), "[\"sh\", \"-c\", \"ls -l\"]"),
            (json!({"cmd": {"a": 1}}), "got an object"),
            (
                json!({"cmd": ["ls", 5]}),
                "cmd[1] must be a string, got a number (5)",
            ),
            (json!({"cmd": [""]}), "the program, is empty"),
            (json!({"cmd": ["ls\u{0}x"]}), "NUL"),
            (
                json!({"cmd": ["ls"], "env": ["X=1"]}),
                "\"env\" must be an object",
            ),
            (
                json!({"cmd": ["ls"], "env": {"X": 1}}),
                "env X must be a string",
            ),
            (
                json!({"cmd": ["ls"], "env": {"A=B": "1"}}),
                "not a valid variable name",
            ),
            (
                json!({"cmd": ["ls"], "env": {"HANDOVER_CHECKPOINT": "{}"}}),
                "set by the worker",
            ),
            (
                json!({"cmd": ["ls"], "cwd": 3}),
                "\"cwd\" must be a non-empty path",
            ),
            (
                json!({"cmd": ["ls"], "cwd": ""}),
                "\"cwd\" must be a non-empty path",
            ),
            (json!({"cmd": ["ls"], "args": []}), "unknown field \"args\""),
        ] {
            let err = parse_payload(&bad).unwrap_err();
            assert!(err.starts_with("invalid exec payload: "), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err:?} should say {says:?}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn problems_are_reported_in_a_fixed_order_whatever_the_key_order() {
        let unknown = format!("unknown field \"zz\"; {PAYLOAD_SHAPE}");
        for (bad, says) in [
            // An unknown field first, wherever it sorts.
            (json!({"zz": 1, "cmd": 5}), unknown.as_str()),
            // Then cmd, env, cwd.
            (
                json!({"cwd": 3, "env": 4, "cmd": []}),
                "\"cmd\" is empty; give at least the program to run",
            ),
            (
                json!({"cwd": 3, "env": 4, "cmd": ["ls"]}),
                "\"env\" must be an object of string values, got a number (4)",
            ),
            // Within cmd, item by item: a NUL before a wrong type.
            (json!({"cmd": ["a\u{0}", 5]}), "cmd[0] contains a NUL byte"),
            (
                json!({"cmd": ["", 5]}),
                "cmd[1] must be a string, got a number (5)",
            ),
            (
                json!({"cmd": ["ls"], "env": {"B": 1, "A": "x\u{0}"}}),
                "env A contains a NUL byte",
            ),
            (
                json!({"cmd": ["ls"], "cwd": "a\u{0}b"}),
                "\"cwd\" must be a non-empty path, got a string (\"a\\0b\")",
            ),
            (
                json!({"cmd": ["ls"], "cwd": 1.5}),
                "\"cwd\" must be a non-empty path, got a number (1.5)",
            ),
        ] {
            let err = parse_payload(&bad).unwrap_err();
            assert_eq!(err, format!("invalid exec payload: {says}"), "{bad}");
        }
        let every_field = json!({"cmd": ["ls"], "env": {}, "cwd": "/"});
        let known: Vec<&str> = every_field
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(parse_payload(&every_field).is_ok());
        assert!(FIELDS.iter().all(|f| known.contains(f)) && known.len() == FIELDS.len());
    }
}
