//! Registry-style documentation generated from a provider's schemas and example HCL.
//!
//! The pages follow the layout the Terraform Registry renders:
//!
//! | page                                   | from                                                  |
//! |----------------------------------------|-------------------------------------------------------|
//! | `index.md`                             | provider schema + `examples/provider/provider.tf`     |
//! | `resources/<name>.md`                  | resource schema + `examples/resources/<type>/resource.tf` (+ `import.sh`) |
//! | `data-sources/<name>.md`               | `examples/data-sources/<type>/data-source.tf`         |
//! | `ephemeral-resources/<name>.md`        | `examples/ephemeral-resources/<type>/ephemeral-resource.tf` |
//! | `functions/<name>.md`                  | function signature + `examples/functions/<name>/function.tf` |
//!
//! `<type>` is the full type name (`example_file`), `<name>` the type name without the
//! provider prefix (`file`). Examples are optional; a page without one has no "Example Usage"
//! section. Descriptions are Markdown and copied as they are.
//!
//! Only those five locations are managed: other files in the docs directory (guides,
//! architecture notes) are neither checked nor touched.
//!
//! A provider's docs binary is a few lines:
//!
//! ```no_run
//! # struct MyProvider;
//! # #[async_trait::async_trait]
//! # impl tfplugin::provider::Provider for MyProvider {
//! #     fn schema(&self) -> tfplugin::Schema { tfplugin::Schema::new(tfplugin::Block::new()) }
//! #     async fn configure(&self, _: &tfplugin::provider::Context, _: &str, _: tfplugin::Value)
//! #         -> tfplugin::provider::ConfigureResponse { Default::default() }
//! # }
//! fn main() -> std::process::ExitCode {
//!     let docs = tfplugin::docs::Docs::new("example", "examples");
//!     // `--write docs` regenerates, `--check docs` lists stale pages and fails.
//!     docs.main(&MyProvider, std::env::args().skip(1))
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::provider::{Function, Parameter, Provider};
use crate::schema::{
    Attribute, AttributeType, Block, BlockNesting, NestedAttributes, NestedBlock, ObjectNesting,
    Schema,
};
use crate::types::{ObjectType, Type};

/// Directories (relative to the docs root) whose `.md` files the generator owns.
const MANAGED_DIRS: [&str; 4] = [
    "resources",
    "data-sources",
    "ephemeral-resources",
    "functions",
];

/// The generator could not read an example or read/write a page.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocsError {
    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What the generator was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DocsError {
    let path = path.to_path_buf();
    move |source| DocsError::Io {
        action,
        path,
        source,
    }
}

/// How a page on disk differs from the generated one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Staleness {
    /// The page should exist but does not.
    Missing,
    /// The page exists with other content.
    Outdated,
    /// The page exists but the provider no longer has the item it documents.
    Extra,
}

/// One page that `--check` found stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePage {
    /// Path relative to the docs root, e.g. `resources/file.md`.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: Staleness,
}

impl std::fmt::Display for StalePage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            Staleness::Missing => "missing",
            Staleness::Outdated => "outdated",
            Staleness::Extra => "no longer generated",
        };
        write!(f, "{} ({what})", self.path.display())
    }
}

/// Generates, writes and checks the documentation of one provider.
#[derive(Debug, Clone)]
pub struct Docs {
    provider_name: String,
    examples_dir: PathBuf,
}

impl Docs {
    /// Docs for the provider whose local name (and type name prefix) is `provider_name`, with
    /// example HCL under `examples_dir` (layout in the [module documentation](self)).
    pub fn new(provider_name: impl Into<String>, examples_dir: impl Into<PathBuf>) -> Self {
        Self {
            provider_name: provider_name.into(),
            examples_dir: examples_dir.into(),
        }
    }

    /// Renders every page: path relative to the docs root → Markdown.
    pub fn render(&self, provider: &dyn Provider) -> Result<BTreeMap<PathBuf, String>, DocsError> {
        let mut pages = BTreeMap::new();
        let name = &self.provider_name;

        let mut index = frontmatter(
            &format!("{name} Provider"),
            &provider.schema().block.description,
        );
        let _ = writeln!(index, "# {name} Provider\n");
        push_description(&mut index, &provider.schema().block.description);
        self.push_example(&mut index, &["provider", "provider.tf"], "terraform")?;
        push_schema(&mut index, &provider.schema());
        pages.insert(PathBuf::from("index.md"), index);

        for r in provider.resources() {
            let schema = r.schema();
            let page = self.type_page(
                r.type_name(),
                "Resource",
                "resources",
                "resource.tf",
                &schema,
            )?;
            let mut page = page;
            let import = self
                .examples_dir
                .join("resources")
                .join(r.type_name())
                .join("import.sh");
            if let Some(script) = read_optional(&import)? {
                page.truncate(page.trim_end().len());
                page.push('\n');
                let _ = write!(
                    page,
                    "\n## Import\n\nImport is supported using the following syntax:\n\n```shell\n{}\n```\n",
                    script.trim_end()
                );
            }
            pages.insert(self.page_path("resources", r.type_name()), page);
        }
        for d in provider.data_sources() {
            let page = self.type_page(
                d.type_name(),
                "Data Source",
                "data-sources",
                "data-source.tf",
                &d.schema(),
            )?;
            pages.insert(self.page_path("data-sources", d.type_name()), page);
        }
        for e in provider.ephemeral_resources() {
            let page = self.type_page(
                e.type_name(),
                "Ephemeral Resource",
                "ephemeral-resources",
                "ephemeral-resource.tf",
                &e.schema(),
            )?;
            pages.insert(self.page_path("ephemeral-resources", e.type_name()), page);
        }
        for f in provider.functions() {
            pages.insert(
                PathBuf::from("functions").join(format!("{}.md", f.name())),
                self.function_page(f.as_ref())?,
            );
        }
        Ok(pages)
    }

    /// Writes the pages into `docs_dir` and removes managed pages that are no longer
    /// generated. Returns the paths (relative to `docs_dir`) that changed.
    pub fn write(
        &self,
        provider: &dyn Provider,
        docs_dir: &Path,
    ) -> Result<Vec<StalePage>, DocsError> {
        let pages = self.render(provider)?;
        let stale = stale_pages(&pages, docs_dir)?;
        for page in &stale {
            let path = docs_dir.join(&page.path);
            match page.kind {
                Staleness::Extra => std::fs::remove_file(&path).map_err(io_err("remove", &path))?,
                Staleness::Missing | Staleness::Outdated => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(io_err("create directory", parent))?;
                    }
                    let content = pages
                        .get(&page.path)
                        .map(String::as_str)
                        .unwrap_or_default();
                    std::fs::write(&path, content).map_err(io_err("write", &path))?;
                }
            }
        }
        Ok(stale)
    }

    /// Compares the pages with `docs_dir`; an empty result means the docs are up to date.
    pub fn check(
        &self,
        provider: &dyn Provider,
        docs_dir: &Path,
    ) -> Result<Vec<StalePage>, DocsError> {
        stale_pages(&self.render(provider)?, docs_dir)
    }

    /// Command-line entry point for a docs binary: `--write <dir>` regenerates the docs,
    /// `--check <dir>` lists stale pages and fails when there are any.
    pub fn main(
        &self,
        provider: &dyn Provider,
        args: impl IntoIterator<Item = String>,
    ) -> ExitCode {
        let args: Vec<String> = args.into_iter().collect();
        let (mode, dir) = match args.as_slice() {
            [mode, dir] if mode == "--write" || mode == "--check" => {
                (mode.as_str(), PathBuf::from(dir))
            }
            _ => {
                eprintln!("usage: --write <docs dir> | --check <docs dir>");
                return ExitCode::from(2);
            }
        };
        if mode == "--write" {
            match self.write(provider, &dir) {
                Ok(changed) => {
                    for page in &changed {
                        println!("updated {}", dir.join(&page.path).display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        } else {
            match self.check(provider, &dir) {
                Ok(stale) if stale.is_empty() => ExitCode::SUCCESS,
                Ok(stale) => {
                    eprintln!("documentation in {} is stale:", dir.display());
                    for page in &stale {
                        eprintln!("  {page}");
                    }
                    eprintln!("regenerate it with --write {}", dir.display());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }

    fn short_name<'a>(&self, type_name: &'a str) -> &'a str {
        type_name
            .strip_prefix(self.provider_name.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
            .unwrap_or(type_name)
    }

    fn page_path(&self, dir: &str, type_name: &str) -> PathBuf {
        PathBuf::from(dir).join(format!("{}.md", self.short_name(type_name)))
    }

    fn type_page(
        &self,
        type_name: &str,
        kind: &str,
        example_dir: &str,
        example_file: &str,
        schema: &Schema,
    ) -> Result<String, DocsError> {
        let description = &schema.block.description;
        let mut page = frontmatter(
            &format!("{type_name} {kind} - {}", self.provider_name),
            description,
        );
        let _ = writeln!(page, "# {type_name} ({kind})\n");
        push_description(&mut page, description);
        self.push_example(
            &mut page,
            &[example_dir, type_name, example_file],
            "terraform",
        )?;
        push_schema(&mut page, schema);
        Ok(page)
    }

    fn function_page(&self, f: &dyn Function) -> Result<String, DocsError> {
        let sig = f.signature();
        let name = f.name();
        let summary = if sig.summary.is_empty() {
            &sig.description
        } else {
            &sig.summary
        };
        let mut page = frontmatter(
            &format!("{name} function - {}", self.provider_name),
            summary,
        );
        let _ = writeln!(page, "# function: {name}\n");
        if let Some(msg) = &sig.deprecation_message {
            let _ = writeln!(page, "~> **Deprecated** {msg}\n");
        }
        push_description(&mut page, &sig.description);
        self.push_example(&mut page, &["functions", name, "function.tf"], "terraform")?;
        let params: Vec<String> = sig
            .parameters
            .iter()
            .map(|p| format!("{} {}", p.name, p.ty))
            .chain(
                sig.variadic
                    .iter()
                    .map(|p| format!("{}... {}", p.name, p.ty)),
            )
            .collect();
        let _ = write!(
            page,
            "## Signature\n\n```text\n{name}({}) {}\n```\n",
            params.join(", "),
            sig.return_type
        );
        if !params.is_empty() {
            page.push_str("\n## Arguments\n\n");
            for (i, p) in sig.parameters.iter().enumerate() {
                let _ = writeln!(page, "{}. {}", i + 1, param_line(p, false));
            }
            if let Some(p) = &sig.variadic {
                let _ = writeln!(
                    page,
                    "{}. {}",
                    sig.parameters.len() + 1,
                    param_line(p, true)
                );
            }
        }
        Ok(page)
    }

    fn push_example(&self, page: &mut String, parts: &[&str], lang: &str) -> Result<(), DocsError> {
        let path = parts
            .iter()
            .fold(self.examples_dir.clone(), |p, part| p.join(part));
        if let Some(example) = read_optional(&path)? {
            let _ = write!(
                page,
                "## Example Usage\n\n```{lang}\n{}\n```\n\n",
                example.trim_end()
            );
        }
        Ok(())
    }
}

/// Pages of `docs_dir` that differ from `pages`, plus managed pages `pages` no longer has.
fn stale_pages(
    pages: &BTreeMap<PathBuf, String>,
    docs_dir: &Path,
) -> Result<Vec<StalePage>, DocsError> {
    let mut stale = Vec::new();
    for (rel, content) in pages {
        let path = docs_dir.join(rel);
        match read_optional(&path)? {
            None => stale.push(StalePage {
                path: rel.clone(),
                kind: Staleness::Missing,
            }),
            Some(on_disk) if on_disk != *content => {
                stale.push(StalePage {
                    path: rel.clone(),
                    kind: Staleness::Outdated,
                });
            }
            Some(_) => {}
        }
    }
    for dir in MANAGED_DIRS {
        let abs = docs_dir.join(dir);
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &abs)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &abs))?;
            let rel = Path::new(dir).join(entry.file_name());
            if rel.extension().is_some_and(|e| e == "md") && !pages.contains_key(&rel) {
                stale.push(StalePage {
                    path: rel,
                    kind: Staleness::Extra,
                });
            }
        }
    }
    stale.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(stale)
}

fn param_line(p: &Parameter, variadic: bool) -> String {
    let mut flags = vec![type_label(&p.ty).0];
    if variadic {
        flags.push("Variadic".to_owned());
    }
    if p.allow_null {
        flags.push("Nullable".to_owned());
    }
    let mut line = format!("`{}` ({})", p.name, flags.join(", "));
    if !p.description.trim().is_empty() {
        line.push(' ');
        line.push_str(&one_line(&p.description));
    }
    line
}

fn read_optional(path: &Path) -> Result<Option<String>, DocsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// YAML front matter as the registry expects: a title and the first paragraph as description.
fn frontmatter(title: &str, description: &str) -> String {
    let first = description.trim().split("\n\n").next().unwrap_or_default();
    let mut out = format!(
        "---\npage_title: \"{}\"\ndescription: |-\n",
        title.replace('"', "\\\"")
    );
    for line in first.lines() {
        if line.trim().is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "  {}", line.trim_end());
        }
    }
    out.push_str("---\n\n");
    out
}

fn push_description(page: &mut String, description: &str) {
    let d = description.trim();
    if !d.is_empty() {
        let _ = write!(page, "{d}\n\n");
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A nested schema that gets its own anchored section below the top-level lists.
enum Nested<'a> {
    Attributes(&'a NestedAttributes),
    Block(&'a Block),
    Object(&'a ObjectType),
}

struct Section<'a> {
    anchor: String,
    title: String,
    nested: Nested<'a>,
}

fn anchor(prefix: &str, path: &[&str]) -> String {
    format!("{prefix}--{}", path.join("--"))
}

/// Writes `## Schema` with Required/Optional/Read-Only lists, then every nested schema.
fn push_schema(page: &mut String, schema: &Schema) {
    let mut queue: Vec<Section<'_>> = Vec::new();
    let mut body = String::new();
    write_block(&mut body, &schema.block, &[], &mut queue, "### ", "");
    if body.is_empty() {
        return;
    }
    page.push_str("<!-- schema generated by tfplugin::docs -->\n## Schema\n\n");
    page.push_str(&body);
    // Sections are appended while earlier ones are written (depth-first order of discovery).
    let mut i = 0;
    while let Some(section) = queue.get(i) {
        let _ = write!(
            page,
            "<a id=\"{}\"></a>\n### Nested Schema for `{}`\n\n",
            section.anchor, section.title
        );
        let mut sub = String::new();
        let path: Vec<String> = section.title.split('.').map(str::to_owned).collect();
        let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut more = Vec::new();
        match section.nested {
            Nested::Attributes(n) => {
                write_attributes(&mut sub, &n.attributes, &[], &path_refs, &mut more, "", ":");
            }
            Nested::Block(b) => write_block(&mut sub, b, &path_refs, &mut more, "", ":"),
            Nested::Object(o) => write_object(&mut sub, o, &path_refs, &mut more),
        }
        page.push_str(&sub);
        queue.extend(more);
        i += 1;
    }
}

/// Attribute and block lists of `block`, grouped by Required/Optional/Read-Only.
fn write_block<'a>(
    out: &mut String,
    block: &'a Block,
    path: &[&str],
    queue: &mut Vec<Section<'a>>,
    heading_prefix: &str,
    heading_suffix: &str,
) {
    write_attributes(
        out,
        &block.attributes,
        &block.block_types,
        path,
        queue,
        heading_prefix,
        heading_suffix,
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Required,
    Optional,
    ReadOnly,
}

fn write_attributes<'a>(
    out: &mut String,
    attributes: &'a [Attribute],
    blocks: &'a [NestedBlock],
    path: &[&str],
    queue: &mut Vec<Section<'a>>,
    heading_prefix: &str,
    heading_suffix: &str,
) {
    let mut items: Vec<(Group, &str, String)> = Vec::new();
    for a in attributes {
        let group = if a.required {
            Group::Required
        } else if a.optional {
            Group::Optional
        } else {
            Group::ReadOnly
        };
        items.push((group, &a.name, attribute_line(a, path, queue)));
    }
    for b in blocks {
        let group = if b.min_items > 0 {
            Group::Required
        } else {
            Group::Optional
        };
        items.push((group, &b.type_name, block_line(b, path, queue)));
    }
    items.sort_by(|a, b| a.1.cmp(b.1));
    for (group, title) in [
        (Group::Required, "Required"),
        (Group::Optional, "Optional"),
        (Group::ReadOnly, "Read-Only"),
    ] {
        let lines: Vec<&String> = items
            .iter()
            .filter(|i| i.0 == group)
            .map(|i| &i.2)
            .collect();
        if lines.is_empty() {
            continue;
        }
        let _ = write!(out, "{heading_prefix}{title}{heading_suffix}\n\n");
        for line in lines {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
}

fn write_object<'a>(
    out: &mut String,
    o: &'a ObjectType,
    path: &[&str],
    queue: &mut Vec<Section<'a>>,
) {
    out.push_str("Read-Only:\n\n");
    for (name, ty) in &o.attributes {
        let mut sub: Vec<&str> = path.to_vec();
        sub.push(name);
        let (label, object) = type_label(ty);
        let mut line = format!("`{name}` ({label})");
        if let Some(obj) = object {
            let a = anchor("nestedobjatt", &sub);
            let _ = write!(line, " (see [below for nested schema](#{a}))");
            queue.push(Section {
                anchor: a,
                title: sub.join("."),
                nested: Nested::Object(obj),
            });
        }
        let _ = writeln!(out, "- {line}");
    }
    out.push('\n');
}

fn attribute_line<'a>(a: &'a Attribute, path: &[&str], queue: &mut Vec<Section<'a>>) -> String {
    let mut sub: Vec<&str> = path.to_vec();
    sub.push(&a.name);
    let mut flags = Vec::new();
    let mut link = None;
    match &a.ty {
        AttributeType::Type(ty) => {
            let (label, object) = type_label(ty);
            flags.push(label);
            if let Some(obj) = object {
                let anc = anchor("nestedobjatt", &sub);
                link = Some(anc.clone());
                queue.push(Section {
                    anchor: anc,
                    title: sub.join("."),
                    nested: Nested::Object(obj),
                });
            }
        }
        AttributeType::Nested(n) => {
            flags.push(
                match n.nesting {
                    ObjectNesting::Single => "Attributes",
                    ObjectNesting::List => "Attributes List",
                    ObjectNesting::Set => "Attributes Set",
                    ObjectNesting::Map => "Attributes Map",
                }
                .to_owned(),
            );
            let anc = anchor("nestedatt", &sub);
            link = Some(anc.clone());
            queue.push(Section {
                anchor: anc,
                title: sub.join("."),
                nested: Nested::Attributes(n),
            });
        }
    }
    if a.sensitive {
        flags.push("Sensitive".to_owned());
    }
    if a.write_only {
        flags.push("Write-only".to_owned());
    }
    if a.deprecated {
        flags.push("Deprecated".to_owned());
    }
    item_line(&a.name, &flags, &a.description, link)
}

fn block_line<'a>(b: &'a NestedBlock, path: &[&str], queue: &mut Vec<Section<'a>>) -> String {
    let mut sub: Vec<&str> = path.to_vec();
    sub.push(&b.type_name);
    let mut flags = vec![
        match b.nesting {
            BlockNesting::Single | BlockNesting::Group => "Block",
            BlockNesting::List => "Block List",
            BlockNesting::Set => "Block Set",
            BlockNesting::Map => "Block Map",
        }
        .to_owned(),
    ];
    if b.min_items > 0 {
        flags.push(format!("Min: {}", b.min_items));
    }
    if b.max_items > 0 {
        flags.push(format!("Max: {}", b.max_items));
    }
    if b.block.deprecated {
        flags.push("Deprecated".to_owned());
    }
    let anc = anchor("nestedblock", &sub);
    queue.push(Section {
        anchor: anc.clone(),
        title: sub.join("."),
        nested: Nested::Block(&b.block),
    });
    item_line(&b.type_name, &flags, &b.block.description, Some(anc))
}

fn item_line(name: &str, flags: &[String], description: &str, link: Option<String>) -> String {
    let mut line = format!("`{name}` ({})", flags.join(", "));
    let d = one_line(description);
    if !d.is_empty() {
        line.push(' ');
        line.push_str(&d);
    }
    if let Some(a) = link {
        let _ = write!(line, " (see [below for nested schema](#{a}))");
    }
    line
}

/// The registry's type wording ("List of String") and the object type to document below, if
/// the innermost element is an object.
fn type_label(ty: &Type) -> (String, Option<&ObjectType>) {
    match ty {
        Type::Bool => ("Bool".into(), None),
        Type::Number => ("Number".into(), None),
        Type::String => ("String".into(), None),
        Type::Dynamic => ("Dynamic".into(), None),
        Type::Object(o) => ("Object".into(), Some(o)),
        Type::Tuple(_) => ("Tuple".into(), None),
        Type::List(e) | Type::Set(e) | Type::Map(e) => {
            let kind = match ty {
                Type::List(_) => "List",
                Type::Set(_) => "Set",
                _ => "Map",
            };
            let (inner, obj) = type_label(e);
            (format!("{kind} of {inner}"), obj)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ConfigureResponse, Context, Resource, Signature};
    use crate::value::Value;
    use std::sync::Arc;

    struct P;
    struct R;

    #[async_trait::async_trait]
    impl Resource for R {
        fn type_name(&self) -> &str {
            "demo_thing"
        }
        fn schema(&self) -> Schema {
            Schema::new(
                Block::new()
                    .description("A thing.\n\nMore detail.")
                    .attribute(Attribute::required("name", Type::String).description("Its name."))
                    .attribute(Attribute::optional("secret", Type::String).sensitive())
                    .attribute(Attribute::optional("password", Type::String).write_only())
                    .attribute(Attribute::computed("id", Type::String))
                    .attribute(Attribute::optional(
                        "tags",
                        Type::list(Type::object([("k", Type::String)])),
                    ))
                    .attribute(Attribute::optional(
                        "settings",
                        NestedAttributes::single([Attribute::required("mode", Type::String)]),
                    ))
                    .block(
                        NestedBlock::list(
                            "rule",
                            Block::new().attribute(Attribute::optional("port", Type::Number)),
                        )
                        .min_items(1),
                    ),
            )
        }
        async fn read(
            &self,
            _: &Context,
            _: crate::provider::ReadRequest,
        ) -> crate::provider::StateResponse {
            unreachable!()
        }
        async fn create(
            &self,
            _: &Context,
            _: crate::provider::ApplyRequest,
        ) -> crate::provider::StateResponse {
            unreachable!()
        }
        async fn update(
            &self,
            _: &Context,
            _: crate::provider::ApplyRequest,
        ) -> crate::provider::StateResponse {
            unreachable!()
        }
        async fn delete(
            &self,
            _: &Context,
            _: crate::provider::ApplyRequest,
        ) -> crate::Diagnostics {
            unreachable!()
        }
    }

    struct F;
    #[async_trait::async_trait]
    impl Function for F {
        fn name(&self) -> &str {
            "upper"
        }
        fn signature(&self) -> Signature {
            Signature::new(
                vec![Parameter::new("s", Type::String).description("Input.")],
                Type::String,
            )
            .summary("Upper-cases a string.")
        }
        async fn call(
            &self,
            _: &Context,
            _: Vec<Value>,
        ) -> Result<Value, crate::provider::FunctionError> {
            unreachable!()
        }
    }

    #[async_trait::async_trait]
    impl Provider for P {
        fn schema(&self) -> Schema {
            Schema::new(
                Block::new()
                    .description("The demo provider.")
                    .attribute(Attribute::optional("root", Type::String)),
            )
        }
        async fn configure(&self, _: &Context, _: &str, _: Value) -> ConfigureResponse {
            ConfigureResponse::default()
        }
        fn resources(&self) -> Vec<Arc<dyn Resource>> {
            vec![Arc::new(R)]
        }
        fn functions(&self) -> Vec<Arc<dyn Function>> {
            vec![Arc::new(F)]
        }
    }

    fn docs(examples: &Path) -> Docs {
        Docs::new("demo", examples)
    }

    #[test]
    fn renders_schema_sections_and_nested_anchors() {
        let ex = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ex.path().join("resources/demo_thing")).unwrap();
        std::fs::write(
            ex.path().join("resources/demo_thing/resource.tf"),
            "resource \"demo_thing\" \"x\" {}\n",
        )
        .unwrap();
        std::fs::write(
            ex.path().join("resources/demo_thing/import.sh"),
            "terraform import demo_thing.x x\n",
        )
        .unwrap();
        let pages = docs(ex.path()).render(&P).unwrap();
        let keys: Vec<_> = pages.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(
            keys,
            ["functions/upper.md", "index.md", "resources/thing.md"]
        );
        let page = &pages[Path::new("resources/thing.md")];
        assert!(page.starts_with("---\npage_title: \"demo_thing Resource - demo\"\ndescription: |-\n  A thing.\n---\n"), "{page}");
        assert!(
            page.contains(
                "## Example Usage\n\n```terraform\nresource \"demo_thing\" \"x\" {}\n```"
            )
        );
        assert!(page.contains("### Required\n\n- `name` (String) Its name.\n- `rule` (Block List, Min: 1) (see [below for nested schema](#nestedblock--rule))\n"), "{page}");
        assert!(page.contains("- `secret` (String, Sensitive)"));
        assert!(page.contains("- `password` (String, Write-only)"));
        assert!(page.contains("### Read-Only\n\n- `id` (String)"));
        assert!(page.contains(
            "- `settings` (Attributes) (see [below for nested schema](#nestedatt--settings))"
        ));
        assert!(page.contains("<a id=\"nestedatt--settings\"></a>\n### Nested Schema for `settings`\n\nRequired:\n\n- `mode` (String)"));
        assert!(page.contains(
            "- `tags` (List of Object) (see [below for nested schema](#nestedobjatt--tags))"
        ));
        assert!(page.contains("<a id=\"nestedobjatt--tags\"></a>"));
        assert!(page.contains("## Import\n\nImport is supported using the following syntax:\n\n```shell\nterraform import demo_thing.x x\n```"));
        let f = &pages[Path::new("functions/upper.md")];
        assert!(f.contains("```text\nupper(s string) string\n```"), "{f}");
        assert!(f.contains("1. `s` (String) Input."));
    }

    #[test]
    fn check_reports_missing_outdated_and_extra_then_write_fixes() {
        let ex = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let d = docs(ex.path());
        let stale = d.check(&P, out.path()).unwrap();
        assert_eq!(stale.len(), 3);
        assert!(stale.iter().all(|s| s.kind == Staleness::Missing));
        d.write(&P, out.path()).unwrap();
        assert!(d.check(&P, out.path()).unwrap().is_empty());
        std::fs::write(out.path().join("resources/thing.md"), "old").unwrap();
        std::fs::write(out.path().join("resources/gone.md"), "x").unwrap();
        std::fs::create_dir_all(out.path().join("guides")).unwrap();
        std::fs::write(out.path().join("guides/keep.md"), "mine").unwrap();
        let stale = d.check(&P, out.path()).unwrap();
        assert_eq!(
            stale,
            vec![
                StalePage {
                    path: "resources/gone.md".into(),
                    kind: Staleness::Extra
                },
                StalePage {
                    path: "resources/thing.md".into(),
                    kind: Staleness::Outdated
                },
            ]
        );
        assert_eq!(
            d.main(&P, ["--check".to_owned(), out.path().display().to_string()]),
            ExitCode::FAILURE
        );
        assert_eq!(
            d.main(&P, ["--write".to_owned(), out.path().display().to_string()]),
            ExitCode::SUCCESS
        );
        assert!(d.check(&P, out.path()).unwrap().is_empty());
        assert!(!out.path().join("resources/gone.md").exists());
        assert_eq!(
            std::fs::read_to_string(out.path().join("guides/keep.md")).unwrap(),
            "mine"
        );
        assert_eq!(d.main(&P, ["--bogus".to_owned()]), ExitCode::from(2));
    }
}
