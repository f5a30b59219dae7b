//! Reading the files: TOML, placeholders, and the `raw` types, collecting every problem.

use std::{
    fs,
    path::{Path, PathBuf},
};

use ldsync_core::Secret;
use serde::{de::IntoDeserializer, Deserialize};
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use crate::{
    expand::Expander,
    raw::{RawEnvironment, RawLimits, RawState, RawSync, RawWarehouse},
    validate, Diagnostic, Diagnostics, Error, Project, Result, SYNCS_DIR,
};

/// Loads and validates the project at `path` and every sync in `syncs/` beside it, expanding
/// placeholders from the process environment.
pub fn load(path: &Path) -> Result<Project> {
    load_with(path, &Expander::from_env())
}

/// Like [`load`], with placeholder values from `expander`.
pub fn load_with(path: &Path, expander: &Expander<'_>) -> Result<Project> {
    let project_file = SourceFile::read(path)?;
    let mut diagnostics = Diagnostics::default();
    let root = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let sync_files = read_sync_files(&root.join(SYNCS_DIR), &mut diagnostics)?;
    check_files(&project_file, &sync_files, expander, diagnostics)
}

/// Like [`load_with`], with the files' contents given rather than read: `text` is the project
/// file at `path`, and each of `syncs` is a sync file's path and text, in the order given.
///
/// Nothing is read from disk, so tools and fuzzers can check a project held in memory.
///
/// ```
/// use std::path::{Path, PathBuf};
///
/// let expander = ldsync_config::expand::Expander::with_lookup(|_| None);
/// let result = ldsync_config::load_from_texts(
///     Path::new("ldsync.toml"),
///     "[limits]\nmax_concurrent_syncs = 0\n",
///     &[(PathBuf::from("syncs/empty.toml"), String::new())],
///     &expander,
/// );
/// assert!(result.is_err());
/// ```
pub fn load_from_texts(
    path: &Path,
    text: &str,
    syncs: &[(PathBuf, String)],
    expander: &Expander<'_>,
) -> Result<Project> {
    let project_file = SourceFile { path: path.to_path_buf(), text: text.to_owned() };
    let sync_files: Vec<_> = syncs
        .iter()
        .map(|(path, text)| SourceFile { path: path.clone(), text: text.clone() })
        .collect();
    check_files(&project_file, &sync_files, expander, Diagnostics::default())
}

/// Parses and validates files already read, adding to the problems found while reading them.
fn check_files(
    project_file: &SourceFile,
    sync_files: &[SourceFile],
    expander: &Expander<'_>,
    mut diagnostics: Diagnostics,
) -> Result<Project> {
    let project = parse_project(project_file, expander, &mut diagnostics);
    let secrets = project.secrets();
    let syncs: Vec<_> = sync_files
        .iter()
        .map(|file| (file, parse_sync(file, expander, &mut diagnostics)))
        .collect();

    let project = validate::validate(project_file, project, &syncs, &mut diagnostics);
    // Every problem in a sync file names its sync (the file's stem), whichever phase found it.
    for diagnostic in &mut diagnostics.0 {
        if sync_files.iter().any(|file| file.path == diagnostic.path) {
            diagnostic.sync = diagnostic.path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
    }
    if diagnostics.is_empty() {
        Ok(project)
    } else {
        diagnostics.sort();
        // A secret expanded into a field that is not secret could be quoted by a message.
        for diagnostic in &mut diagnostics.0 {
            for secret in &secrets {
                if diagnostic.message.contains(secret.as_str()) {
                    diagnostic.message =
                        diagnostic.message.replace(secret.as_str(), Secret::REDACTED);
                }
            }
        }
        Err(Error::Invalid(diagnostics))
    }
}

/// A file's path and text, kept together so that a byte offset becomes a `line:column`.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

impl SourceFile {
    fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    /// A problem at byte `offset` of the file.
    pub(crate) fn at(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at_offset(&self.path, &self.text, offset, message)
    }

    /// Whether the text behind `span` wrote a `${…}` placeholder (rather than a literal value).
    pub(crate) fn wrote_placeholder(&self, span: std::ops::Range<usize>) -> bool {
        self.text.get(span).is_some_and(Expander::has_placeholder)
    }
}

/// The parts of `ldsync.toml`, each parsed on its own so that one bad part hides no other.
#[derive(Debug, Default)]
pub(crate) struct ParsedProject {
    pub(crate) state: Option<Spanned<RawState>>,
    pub(crate) warehouses: Vec<(Spanned<String>, Spanned<RawWarehouse>)>,
    pub(crate) environments: Vec<(Spanned<String>, Spanned<RawEnvironment>)>,
    pub(crate) limits: Option<RawLimits>,
    /// Names declared, even by entries that failed to parse, so syncs are not blamed for them.
    pub(crate) warehouse_names: Vec<String>,
    /// Names declared, even by entries that failed to parse.
    pub(crate) environment_names: Vec<String>,
}

impl ParsedProject {
    /// The secret values the project holds, to be kept out of every message.
    fn secrets(&self) -> Vec<String> {
        let tokens = self.environments.iter().map(|(_, env)| env.get_ref().token.get_ref());
        let warehouses = self
            .warehouses
            .iter()
            .filter_map(|(_, w)| w.get_ref().postgres.as_ref())
            .map(Spanned::get_ref);
        let state =
            self.state.iter().filter_map(|s| s.get_ref().url.as_ref()).map(Spanned::get_ref);
        let mut secrets: Vec<String> = tokens
            .chain(warehouses)
            .chain(state)
            .map(String::clone)
            .filter(|secret| secret.len() >= 4)
            .collect();
        // Longest first, so that a secret holding another is replaced whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
    }
}

fn parse_project(
    file: &SourceFile,
    expander: &Expander<'_>,
    diagnostics: &mut Diagnostics,
) -> ParsedProject {
    let mut project = ParsedProject::default();
    let Some(document) = parse_document(file, expander, diagnostics) else {
        return project;
    };
    for (key, value) in document.into_inner() {
        let value_span = value.span();
        match key.get_ref().as_ref() {
            "state" => project.state = deserialize_part(file, value, diagnostics),
            "limits" => project.limits = deserialize_part(file, value, diagnostics),
            "warehouses" => {
                for (name, entry) in named_tables(file, value, "warehouses", diagnostics) {
                    project.warehouse_names.push(name.get_ref().clone());
                    if let Some(warehouse) = deserialize_part(file, entry, diagnostics) {
                        project.warehouses.push((name, warehouse));
                    }
                }
            }
            "environments" => {
                for (name, entry) in named_tables(file, value, "environments", diagnostics) {
                    project.environment_names.push(name.get_ref().clone());
                    if let Some(environment) = deserialize_part(file, entry, diagnostics) {
                        project.environments.push((name, environment));
                    }
                }
            }
            other => {
                let at = key.span().start.min(value_span.start);
                diagnostics.push(file.at(
                    at,
                    format!(
                        "unknown key `{}`, expected one of `state`, `warehouses`, `environments`, `limits`",
                        other.escape_debug()
                    ),
                ));
            }
        }
    }
    project
}

/// The entries of a table of named tables, such as `[warehouses.NAME]`.
fn named_tables<'a>(
    file: &SourceFile,
    value: Spanned<DeValue<'a>>,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<(Spanned<String>, Spanned<DeValue<'a>>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(table) => table
            .into_iter()
            .map(|(name, entry)| {
                let name_span = name.span();
                (Spanned::new(name_span, name.into_inner().into_owned()), entry)
            })
            .collect(),
        other => {
            diagnostics.push(file.at(
                span.start,
                format!("invalid type: {}, expected a table of {what}", other.type_str()),
            ));
            Vec::new()
        }
    }
}

/// One sync file, parsed.
#[derive(Debug)]
pub(crate) struct ParsedSync {
    pub(crate) raw: RawSync,
}

fn parse_sync(
    file: &SourceFile,
    expander: &Expander<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<ParsedSync> {
    let document = parse_document(file, expander, diagnostics)?;
    let span = document.span();
    let value = Spanned::new(span, DeValue::Table(document.into_inner()));
    deserialize_part(file, value, diagnostics).map(|raw| ParsedSync { raw })
}

/// Parses TOML and expands the placeholders in every string value.
fn parse_document<'a>(
    file: &'a SourceFile,
    expander: &Expander<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<Spanned<DeTable<'a>>> {
    let (mut document, errors) = DeTable::parse_recoverable(&file.text);
    if !errors.is_empty() {
        for error in errors {
            let offset = error.span().map_or(0, |span| span.start);
            diagnostics.push(file.at(offset, toml_message(&error)));
        }
        return None;
    }
    let before = diagnostics.len();
    for (_, value) in document.get_mut().iter_mut() {
        expand_value(file, value, expander, diagnostics);
    }
    (diagnostics.len() == before).then_some(document)
}

fn expand_value(
    file: &SourceFile,
    value: &mut Spanned<DeValue<'_>>,
    expander: &Expander<'_>,
    diagnostics: &mut Diagnostics,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) => {
            if !text.contains("${") {
                return;
            }
            match expander.expand(text) {
                Ok(value) => *text = value.into(),
                Err(error) => {
                    // Point at the placeholder itself: the n-th `${` of the string is the n-th
                    // `${` of its source text, whatever escapes came before it.
                    let nth = text[..error.offset()].matches("${").count();
                    let source = file.text.get(span.clone()).unwrap_or_default();
                    let within =
                        source.match_indices("${").nth(nth).map_or(0, |(offset, _)| offset);
                    diagnostics.push(file.at(span.start + within, error.to_string()));
                }
            }
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                expand_value(file, item, expander, diagnostics);
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                expand_value(file, item, expander, diagnostics);
            }
        }
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

/// Deserialises one part of a document, reporting the first problem in it.
fn deserialize_part<'de, T: Deserialize<'de>>(
    file: &SourceFile,
    value: Spanned<DeValue<'de>>,
    diagnostics: &mut Diagnostics,
) -> Option<T> {
    let fallback = value.span().start;
    match T::deserialize(value.into_deserializer()) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let offset = error.span().map_or(fallback, |span| span.start);
            diagnostics.push(file.at(offset, toml_message(&error)));
            None
        }
    }
}

/// TOML's message, as one lowercase line without a final period.
fn toml_message(error: &toml::de::Error) -> String {
    let message = error.message().trim().trim_end_matches('.').replace('\n', "; ");
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "invalid TOML".to_owned(),
    }
}

/// Reads every `*.toml` in the syncs folder, in name order.
fn read_sync_files(dir: &Path, diagnostics: &mut Diagnostics) -> Result<Vec<SourceFile>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir.to_path_buf(), source }),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        match fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => files.push(SourceFile { path, text }),
                Err(error) => diagnostics.push(Diagnostic::in_file(
                    &path,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        error.utf8_error().valid_up_to()
                    ),
                )),
            },
            Err(error) => {
                diagnostics.push(Diagnostic::in_file(&path, format!("cannot read: {error}")));
            }
        }
    }
    Ok(files)
}
