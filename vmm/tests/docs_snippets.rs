//! The shell commands that README.md, docs/ and the examples' headers tell a user to type,
//! run verbatim (bash, from the repository root, the built `mshare-vmm` on PATH as if
//! installed), so that a documented command cannot break unnoticed.
//!
//! Markdown: every ```sh block, except the one of the top-level commands (`make demo`,
//! `make test`: CI runs the latter, and it runs this). Examples: the indented commands
//! (`#   ...`) of each example file's header, except those with `<PLACEHOLDERS>` to fill
//! in. The commands of one block run in one shell, in order; any that fails fails the
//! test, named. Inner `cargo run`s use their own target directory: this test's cargo holds
//! the workspace's. These need `make images` (which `make test` runs first).

use guest_runner::images::repo_root;
use std::path::Path;
use std::process::Command;

/// One documented block: where it is, and its commands (continuation lines joined).
struct Snippet {
    place: String,
    commands: Vec<String>,
}

/// Joins lines ending in `\` with the next.
fn join_continuations<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || (pending.is_empty() && line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

fn markdown_snippets(file: &Path) -> Vec<Snippet> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut snippets = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().map(|(_, l)| l).take_while(|l| l.trim() != "```").collect();
        let commands = join_continuations(body.into_iter());
        if commands.iter().any(|c| c.starts_with("make ")) {
            continue;
        }
        snippets.push(Snippet { place: format!("{}:{}", file.display(), n + 1), commands });
    }
    snippets
}

fn example_snippet(file: &Path) -> Option<Snippet> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let header = text.lines().skip_while(|l| l.starts_with("#!")).take_while(|l| l.starts_with('#'));
    let indented = header.filter_map(|l| l.strip_prefix("#   "));
    let commands: Vec<String> = join_continuations(indented).into_iter().filter(|c| !c.contains('<')).collect();
    (!commands.is_empty()).then(|| Snippet { place: file.display().to_string(), commands })
}

fn run(snippet: &Snippet, root: &Path) {
    let mut script = String::new();
    for command in &snippet.commands {
        script += &format!("{command} || {{ echo \"FAILED: {}\" >&2; exit 1; }}\n", command.replace('"', "\\\""));
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_mshare-vmm")).parent().expect("mshare-vmm's directory");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(root)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", root.join("target").join("snippets"))
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{}: a documented command failed:\n{}\n--- failures in its output ---\n{}\n--- stderr (end) ---\n{}\n--- stdout (end) ---\n{}",
        snippet.place,
        snippet.commands.join("\n"),
        failure_lines(&stdout, &stderr),
        tail(&stderr),
        tail(&stdout)
    );
    println!("{}: {} commands ran", snippet.place, snippet.commands.len());
}

/// The lines that name a failure anywhere in the output (a suite's "not ok" may be
/// hundreds of lines above the tail).
fn failure_lines(stdout: &str, stderr: &str) -> String {
    let marks = ["not ok", "FAILED", "panicked", "BUG:", "WARNING:"];
    let lines: Vec<&str> =
        stdout.lines().chain(stderr.lines()).filter(|l| marks.iter().any(|m| l.contains(m))).collect();
    lines[..lines.len().min(40)].join("\n")
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn documented_commands_run_as_typed() {
    let root = repo_root();
    let mut snippets = markdown_snippets(&root.join("README.md"));
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs")).expect("docs/").flatten().map(|e| e.path()).collect();
    docs.sort();
    for doc in docs.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        snippets.extend(markdown_snippets(doc));
    }
    let mut examples: Vec<_> =
        std::fs::read_dir(root.join("examples")).expect("examples/").flatten().map(|e| e.path()).collect();
    examples.sort();
    snippets.extend(examples.iter().filter(|p| !p.ends_with("demo.sh")).filter_map(|p| example_snippet(p)));
    assert!(snippets.len() >= 5, "too few documented commands found: the extraction is broken");
    for snippet in &snippets {
        run(snippet, &root);
    }
}

#[test]
fn continuation_lines_join_and_comments_go() {
    let commands = join_continuations(["# a comment", "cargo run -- a \\", "    --b c", "", "echo $?"].into_iter());
    assert_eq!(commands, vec!["cargo run -- a  --b c", "echo $?"]);
}
