//! The layering of the README's Repository section, enforced: every `crate::` path in a layer's
//! code (comments aside) names only layers below it. A new upward import fails here, with the file
//! and the line.

use std::collections::BTreeSet;
use std::path::Path;

/// Each layer (a folder `src/NAME/` or a file `src/NAME.rs`) and the layers it may import.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("text", &[]),
    ("process", &[]),
    ("store", &["model"]),
    ("telemetry", &["model"]),
    ("jobs", &["model", "text", "process", "store", "telemetry"]),
    (
        "lifecycle",
        &["model", "text", "store", "telemetry", "jobs"],
    ),
    (
        "worker",
        &["model", "text", "store", "telemetry", "jobs", "lifecycle"],
    ),
    (
        "http",
        &[
            "model",
            "text",
            "store",
            "telemetry",
            "jobs",
            "lifecycle",
            "worker",
        ],
    ),
    (
        "app",
        &[
            "model",
            "text",
            "process",
            "store",
            "telemetry",
            "jobs",
            "lifecycle",
            "worker",
            "http",
        ],
    ),
];

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The layers a line of code names through `crate::`.
fn named_layers(line: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn every_layer_imports_only_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, allowed) in LAYERS {
        let mut files = Vec::new();
        let folder = src.join(layer);
        if folder.is_dir() {
            rust_files(&folder, &mut files);
        } else {
            rust_files(&src.join(format!("{layer}.rs")), &mut files);
        }
        assert!(!files.is_empty(), "layer {layer} has no source files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for name in named_layers(line) {
                    if name != *layer && !allowed.contains(&name.as_str()) {
                        violations.push(format!(
                            "{}:{}: {layer} imports {name}: {}",
                            file.strip_prefix(&src).unwrap().display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    assert_eq!(
        named_layers("use crate::worker::health::StoreHealth; // crate::http"),
        ["http", "worker"].into_iter().map(String::from).collect()
    );
}
