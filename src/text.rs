//! Text from users, checked at the edge: the limits and character rules that the CLI and the HTTP API
//! both apply to drain reasons, names and job payloads before anything reaches the store, and the
//! escaping that keeps stored text from steering a terminal when it is printed.

use serde_json::Value;
use std::fmt::Write as _;

/// Longest drain reason, in bytes (UTF-8).
pub const MAX_REASON_BYTES: usize = 500;
/// Longest name (a worker id or name, a `requested_by`), in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 200;

/// Exit code of a command whose input breaks these rules: the same as for a bad flag.
pub const EXIT_BAD_INPUT: u8 = 2;

/// For the CLI: prints `error: MESSAGE` (one line) and gives the exit code for bad input.
pub fn refuse_cli(message: &str) -> std::process::ExitCode {
    eprintln!("error: {message}");
    std::process::ExitCode::from(EXIT_BAD_INPUT)
}

/// A one-line field: at most `max` bytes and no control character at all (not even tab or newline).
pub fn check_line(field: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!(
            "{field} is longer than {max} bytes ({} bytes)",
            text.len()
        ));
    }
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{field} contains a control character ({}); it must be one line of text",
            code_point(c)
        )),
        None => Ok(()),
    }
}

/// A drain reason (`--reason`, the `reason` field).
pub fn check_reason(reason: &str) -> Result<(), String> {
    check_line("reason", reason, MAX_REASON_BYTES)
}

/// A worker id or name, or who asked for a drain; `field` names it in the error.
pub fn check_name(field: &str, name: &str) -> Result<(), String> {
    check_line(field, name, MAX_NAME_BYTES)
}

/// A job payload: no string in it, key or value, may hold a control character other than tab,
/// newline and carriage return. The error names the JSON path, e.g. `payload.cmd[1]`.
pub fn check_payload(payload: &Value) -> Result<(), String> {
    check_json("payload", payload)
}

/// [`check_payload`] with the path of `value` given.
pub fn check_json(path: &str, value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) => check_json_string(path, text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_json(&format!("{path}[{index}]"), item)),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            if let Some(c) = key.chars().find(|c| is_refused_in_json(*c)) {
                return Err(format!(
                    "a key in {path} contains a control character ({})",
                    code_point(c)
                ));
            }
            check_json(&child_path(path, key), item)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn check_json_string(path: &str, text: &str) -> Result<(), String> {
    match text.chars().find(|c| is_refused_in_json(*c)) {
        Some(c) => Err(format!(
            "{path} contains a control character ({})",
            code_point(c)
        )),
        None => Ok(()),
    }
}

/// Multi-line text is fine inside a payload; other control characters (NUL, escape, ...) are not.
fn is_refused_in_json(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// `path.key` for plain keys, `path["odd key"]` (JSON-quoted) for the rest.
fn child_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{path}.{key}")
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".into());
        format!("{path}[{quoted}]")
    }
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Text made safe for one terminal line: control characters become visible escapes (`\n`, `\r`,
/// `\t`, `\e`, `\xNN`), so no escape sequence reaches the terminal and a row stays one line.
pub fn escape_control(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            // Control characters (Unicode category Cc) are all below U+0100.
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A panic's message, when it carries text.
pub fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_line_fields_refuse_every_control_character_and_long_text() {
        assert!(check_reason("deploy 42: rolling restart (ü)").is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON_BYTES)).is_ok());
        assert_eq!(
            check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).unwrap_err(),
            "reason is longer than 500 bytes (501 bytes)"
        );
        // Bytes, not characters: 250 two-byte characters fit, 251 do not.
        assert!(check_reason(&"é".repeat(250)).is_ok());
        assert!(check_reason(&"é".repeat(251)).is_err());
        for bad in [
            "r\0r",
            "a\nb",
            "tab\there",
            "\u{1b}[31mred",
            "del\u{7f}",
            "c1\u{9b}",
        ] {
            let message = check_reason(bad).unwrap_err();
            assert!(
                message.contains("control character (U+"),
                "{bad:?}: {message}"
            );
        }
        assert!(check_reason("r\0r").unwrap_err().contains("U+0000"));
        assert!(check_name("requested_by", &"n".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name("worker", &"n".repeat(MAX_NAME_BYTES + 1))
            .unwrap_err()
            .starts_with("worker is longer than 200 bytes"));
        assert!(check_name("worker", "w\r1").unwrap_err().contains("U+000D"));
    }

    #[test]
    fn payload_strings_and_keys_are_checked_with_their_path() {
        assert!(check_payload(&json!({
            "cmd": ["sh", "-c", "echo a\n\techo b\r\n"],
            "env": {"LANG": "C.UTF-8"},
            "n": [1, 2.5, null, true, {"deep": ["é"]}]
        }))
        .is_ok());
        assert_eq!(
            check_payload(&json!({"cmd": ["sh", "a\u{0}b"]})).unwrap_err(),
            "payload.cmd[1] contains a control character (U+0000)"
        );
        assert_eq!(
            check_payload(&json!({"a": {"b c": [0, "\u{1b}"]}})).unwrap_err(),
            "payload.a[\"b c\"][1] contains a control character (U+001B)"
        );
        assert_eq!(
            check_payload(&json!({"env": {"K\u{1}": "v"}})).unwrap_err(),
            "a key in payload.env contains a control character (U+0001)"
        );
        assert_eq!(
            check_payload(&json!("\u{85}")).unwrap_err(),
            "payload contains a control character (U+0085)"
        );
    }

    #[test]
    fn escaping_keeps_text_on_one_line_with_no_terminal_escapes() {
        assert_eq!(escape_control("plain ü"), "plain ü");
        assert_eq!(
            escape_control("a\nb\r\tc\u{1b}[2Jd\0\u{7f}\u{9b}"),
            "a\\nb\\r\\tc\\e[2Jd\\x00\\x7f\\x9b"
        );
        let escaped = escape_control("\u{1b}]0;title\u{7}\n");
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
    }
}
