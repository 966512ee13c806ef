//! The result of one terraform run and its machine-readable (`-json`) output.

use serde_json::Value;
use std::process::ExitStatus;

/// Everything a finished terraform run produced.
#[derive(Debug, Clone)]
pub struct TfOutput {
    /// The arguments terraform was run with (for messages).
    pub args: Vec<String>,
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, verbatim.
    pub stdout: String,
    /// Standard error, verbatim.
    pub stderr: String,
}

impl TfOutput {
    /// Whether terraform exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the full output unless terraform exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success(),
            "terraform {} failed ({}):\n{}",
            self.args.join(" "),
            self.status,
            self.combined()
        );
        self
    }

    /// Panics with the full output unless terraform failed.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(
            !self.success(),
            "terraform {} unexpectedly succeeded:\n{}",
            self.args.join(" "),
            self.combined()
        );
        self
    }

    /// Standard output followed by standard error, for assertion messages.
    pub fn combined(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    /// The streaming JSON messages of a `-json` run (plan, apply, refresh, init …): one object per
    /// stdout line; lines that are not JSON objects are skipped.
    pub fn messages(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Streaming messages of one `type` (e.g. `planned_change`, `diagnostic`, `change_summary`).
    pub fn messages_of(&self, kind: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["type"] == kind)
            .collect()
    }

    /// Stdout as a single JSON document (`validate -json`, `show -json`, `output -json`).
    pub fn json(&self) -> Result<Value, crate::HarnessError> {
        serde_json::from_str(&self.stdout).map_err(|source| crate::HarnessError::Json {
            what: "terraform stdout",
            source,
        })
    }

    /// All diagnostics, from either output form: the `diagnostic` messages of a streaming run or
    /// the `diagnostics` array of a `validate -json` document. Each is terraform's JSON
    /// diagnostic object (`severity`, `summary`, `detail`, `address`, `range`, `snippet`).
    pub fn diagnostics(&self) -> Vec<Value> {
        if let Ok(doc) = self.json()
            && let Some(d) = doc.get("diagnostics").and_then(Value::as_array)
        {
            return d.clone();
        }
        self.messages_of("diagnostic")
            .into_iter()
            .map(|m| m["diagnostic"].clone())
            .collect()
    }

    /// Error diagnostics only.
    pub fn errors(&self) -> Vec<Value> {
        self.diagnostics()
            .into_iter()
            .filter(|d| d["severity"] == "error")
            .collect()
    }

    /// The `changes` object of the final `change_summary` message (`add`, `change`, `remove`,
    /// `import`, `operation`), if any.
    pub fn change_summary(&self) -> Option<Value> {
        self.messages_of("change_summary")
            .pop()
            .map(|m| m["changes"].clone())
    }

    /// Whether a streaming plan reported no changes at all (add = change = remove = import = 0).
    pub fn no_changes(&self) -> bool {
        self.change_summary().is_some_and(|c| {
            ["add", "change", "remove", "import"]
                .iter()
                .all(|k| c[*k].as_u64().unwrap_or(0) == 0)
        }) && self.messages_of("planned_change").is_empty()
            && self.messages_of("resource_drift").is_empty()
    }

    /// Whether any output contains `needle` (stdout or stderr).
    pub fn contains(&self, needle: &str) -> bool {
        self.stdout.contains(needle) || self.stderr.contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn out(stdout: &str) -> TfOutput {
        TfOutput {
            args: vec!["plan".into()],
            status: ExitStatus::from_raw(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn streaming_messages_and_summary() {
        let o = out(concat!(
            r#"{"@level":"info","type":"version","terraform":"1.11.4"}"#,
            "\n",
            "not json\n",
            r#"{"@level":"error","type":"diagnostic","diagnostic":{"severity":"error","summary":"bad","address":"x.y"}}"#,
            "\n",
            r#"{"type":"change_summary","changes":{"add":0,"change":0,"import":0,"remove":0,"operation":"plan"}}"#,
            "\n",
        ));
        assert_eq!(o.messages().len(), 3);
        assert_eq!(o.errors().len(), 1);
        assert_eq!(o.errors()[0]["address"], "x.y");
        assert!(o.no_changes());
    }

    #[test]
    fn validate_document_diagnostics() {
        let o = out(
            r#"{"valid":false,"error_count":1,"diagnostics":[{"severity":"error","summary":"s"}]}"#,
        );
        assert_eq!(o.diagnostics().len(), 1);
        assert_eq!(o.json().unwrap()["valid"], false);
    }

    #[test]
    fn planned_change_is_a_change() {
        let o = out(concat!(
            r#"{"type":"planned_change","change":{"action":"update"}}"#,
            "\n",
            r#"{"type":"change_summary","changes":{"add":0,"change":1,"import":0,"remove":0}}"#,
            "\n",
        ));
        assert!(!o.no_changes());
    }
}
