//! The layering rule of `src/lib.rs`: a file imports from its own layer and the
//! layers below, never from a layer above. This test reads every `crate::` path in
//! `src/` (the command line in `src/cli/` is the library's top layer, 5) and fails
//! on any import that points up. It also keeps object_store and tokio inside
//! `storage/`.

use std::path::{Path, PathBuf};

/// Layer of a top-level module of the library, lowest first.
fn layer_of(module: &str) -> Option<usize> {
    Some(match module {
        "format" => 0,
        "error" => 1,
        "storage" => 2,
        "repo" => 3,
        "source" => 3,
        "database" => 3,
        "ops" => 4,
        "cli" => 5,
        _ => return None,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/repo/saver.rs` → `repo`).
fn module_of_file(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every module named right after `prefix` (`crate::repo::x` → `repo`), including
/// those in grouped imports (`crate::{ops, repo}`).
fn imported_modules(text: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let after = &rest[i + prefix.len()..];
            let names: Vec<&str> = if let Some(group) = after.strip_prefix('{') {
                group.split('}').next().unwrap_or("").split(',').collect()
            } else {
                vec![after]
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((n + 1, name));
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn no_layer_imports_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(own) = module_of_file(&src, file) else {
            continue;
        };
        let Some(own_layer) = layer_of(&own) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // The library names itself `crate::`; a `cairn::` path would dodge this check.
        for (line, _) in imported_modules(&text, "cairn::") {
            violations.push(format!(
                "{}:{line}: names cairn::, not crate::",
                file.display()
            ));
        }
        for (line, module) in imported_modules(&text, "crate::") {
            checked += 1;
            match layer_of(&module) {
                Some(l) if l > own_layer => violations.push(format!(
                    "{}:{line}: layer {own} imports {module}, which is above it",
                    file.display()
                )),
                Some(_) => {}
                // The command line may use the crate root's re-exports (the public API).
                None if own != "cli" => violations.push(format!(
                    "{}:{line}: imports crate::{module}, which is in no layer: add it to lib.rs and this test",
                    file.display()
                )),
                None => {}
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports found: is the parser broken?"
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let module = name.trim_end_matches(".rs");
        if ["lib", "main"].contains(&module) {
            continue;
        }
        assert!(
            layer_of(module).is_some(),
            "src/{name} belongs to no layer: place it in one of the layer folders"
        );
    }
}

#[test]
fn only_storage_knows_tokio_and_object_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in &files {
        let own = module_of_file(&src, file).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        if own != "storage" {
            assert!(!text.contains("tokio::"), "{} uses tokio", file.display());
        }
        // The error type names object_store's error as the source of a storage failure.
        if own != "storage" && own != "error" {
            assert!(
                !text.contains("object_store::"),
                "{} uses object_store",
                file.display()
            );
        }
    }
}

#[test]
fn the_parser_sees_grouped_and_nested_imports() {
    let found = imported_modules(
        "use crate::{ops::x, repo};\nlet a = crate::format::id::X; // crate::cli",
        "crate::",
    );
    let names: Vec<_> = found.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(names, ["ops", "repo", "format"]);
}

/// Readers ask the repository for blobs (`repo/blobs.rs`, `repo/tree.rs`);
/// where a blob sits in a pack is the business of the repository and storage
/// layers and of the machinery that deletes, verifies or heals packs: prune,
/// check and repair.
#[test]
fn only_prune_check_and_repair_name_packs_above_the_repository() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("ops"), &mut files);
    rust_files(&src.join("cli"), &mut files);
    let allowed = ["ops/prune.rs", "ops/check.rs", "ops/repair.rs"];
    let mut named = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if allowed.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if [
                "pack_key",
                "PackId",
                "BlobLocation",
                "get_range",
                "get_exact_range",
            ]
            .iter()
            .any(|w| code.contains(w))
            {
                named.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(files.len() > 20, "found the sources");
    assert!(
        named.is_empty(),
        "readers name packs:\n{}",
        named.join("\n")
    );
}
