//! The interactive prompt: `tandemctl` with no arguments (the serial console's login shell).
//!
//! Owns the line editor (rustyline: editing keys, history in `~/.tandemctl_history`, tab
//! completion of the command words), splitting a line into words (with quotes), and the
//! prompt (`lb1> `). Must not know what commands do: each line is parsed by the same clap
//! grammar as the one-shot form and run by `commands::run`.

use clap::Parser as _;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::client::Client;
use crate::commands::{self, Cli, Global};

/// Lines kept in the history file.
const HISTORY_LINES: usize = 1000;

/// The command tree for completion: (words before, candidates).
const TREE: &[(&[&str], &[&str])] = &[
    (
        &[],
        &[
            "status",
            "show",
            "server",
            "config",
            "failover",
            "maintenance",
            "pair",
            "sync",
            "logs",
            "firmware",
            "idle-timeout",
            "reboot",
            "poweroff",
            "help",
            "exit",
        ],
    ),
    (
        &["show"],
        &[
            "frontends",
            "backends",
            "servers",
            "stats",
            "vrrp",
            "sync",
            "history",
            "config",
            "version",
            "boot",
        ],
    ),
    (
        &["config"],
        &[
            "edit", "load", "validate", "diff", "commit", "confirm", "rollback", "discard",
        ],
    ),
    (&["config", "commit"], &["confirmed"]),
    (&["sync"], &["resolve"]),
    (&["sync", "resolve"], &["use-local", "use-peer"]),
    (&["maintenance"], &["on", "off"]),
    (&["firmware"], &["install", "rollback", "status"]),
    (&["logs"], &["proxy", "vrrp", "supervisor"]),
];

/// Server actions, completed after `server NAME`.
const SERVER_ACTIONS: &[&str] = &["drain", "ready", "maint", "weight"];

/// Candidates for the word being typed after `before`.
pub fn complete_words(before: &[&str], partial: &str) -> Vec<String> {
    let options: &[&str] = if before.len() == 2 && before[0] == "server" {
        SERVER_ACTIONS
    } else {
        TREE.iter()
            .find(|(path, _)| *path == before)
            .map_or(&[], |(_, c)| *c)
    };
    options
        .iter()
        .filter(|o| o.starts_with(partial))
        .map(|o| (*o).to_owned())
        .collect()
}

/// Splits a line into words: whitespace separates, single and double quotes group.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

struct TandemHelper;

impl Completer for TandemHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let head = &line[..pos];
        let start = head.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let before: Vec<&str> = head[..start].split_whitespace().collect();
        Ok((start, complete_words(&before, &head[start..])))
    }
}

impl Hinter for TandemHelper {
    type Hint = String;
}
impl Highlighter for TandemHelper {}
impl Validator for TandemHelper {}
impl Helper for TandemHelper {}

/// Runs the prompt until `exit` or end of input.
pub fn run(global: &Global) -> anyhow::Result<i32> {
    run_with(global, None)
}

/// [`run`], with the console's idle timer armed while the prompt waits for a command.
pub fn run_with(global: &Global, idle: Option<&crate::console::Idle>) -> anyhow::Result<i32> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES)?
        .auto_add_history(true)
        .build();
    let mut editor: Editor<TandemHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(TandemHelper));
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".tandemctl_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let node = Client::connect(&global.socket)
        .and_then(|mut c| c.call(&tandem_control::supervisor::Request::Status))
        .ok()
        .and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "tandem".into());
    println!("tandemctl on {node}: `help` lists commands, Tab completes, `exit` leaves");
    let prompt = format!("{node}> ");
    let mut last = 0;
    loop {
        if let Some(i) = idle {
            i.waiting();
        }
        let read = editor.readline(&prompt);
        if let Some(i) = idle {
            i.busy();
        }
        let line = match read {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let words = match split_words(&line) {
            Ok(w) => w,
            Err(e) => {
                println!("error: {e}");
                continue;
            }
        };
        match words.first().map(String::as_str) {
            None => continue,
            Some("exit" | "quit" | "logout") => break,
            Some("help") => {
                let _ = Cli::try_parse_from(["tandemctl", "--help"]).map_err(|e| e.print());
                continue;
            }
            _ => {}
        }
        let args = std::iter::once("tandemctl".to_owned()).chain(words);
        match Cli::try_parse_from(args) {
            Ok(cli) => {
                let global = Global {
                    socket: global.socket.clone(),
                    json: global.json || cli.global.json,
                };
                if let Some(command) = cli.command {
                    last = match commands::run(&global, command, &mut std::io::stdout()) {
                        Ok(code) => code,
                        Err(e) => {
                            println!("error: {e:#}");
                            2
                        }
                    };
                }
            }
            Err(e) => {
                let _ = e.print();
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_quotes() {
        assert_eq!(
            split_words(r#"config commit confirmed 30s "raise web1" 'x y'"#).unwrap(),
            vec!["config", "commit", "confirmed", "30s", "raise web1", "x y"]
        );
        assert_eq!(split_words(r#"a "" b"#).unwrap(), vec!["a", "", "b"]);
        assert!(split_words("a \"b").is_err());
    }

    #[test]
    fn completes_each_level() {
        assert_eq!(complete_words(&[], "st"), vec!["status"]);
        assert_eq!(
            complete_words(&["show"], "s"),
            vec!["servers", "stats", "sync"]
        );
        assert_eq!(complete_words(&["config", "commit"], ""), vec!["confirmed"]);
        assert_eq!(complete_words(&["server", "web1"], "d"), vec!["drain"]);
        assert!(complete_words(&["status"], "").is_empty());
    }
}
