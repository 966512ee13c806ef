//! Attribute paths: where in a value something is (an error, a sensitive attribute,
//! an attribute that requires replacement).

use std::fmt;

/// One step of an [`AttributePath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathStep {
    /// An object attribute (or a nested block) by name.
    Attribute(String),
    /// A map element by key.
    ElementKeyString(String),
    /// A list or tuple element by index (also used for set elements in diagnostics).
    ElementKeyInt(i64),
}

/// A path from the root of a value (a resource, a provider configuration, ...) to a
/// nested part of it; the root itself is the empty path.
///
/// Build paths with the chaining helpers:
///
/// ```
/// use tfplugin::AttributePath;
/// let p = AttributePath::root().attr("rule").index(0).attr("ports").key("http");
/// assert_eq!(p.to_string(), r#"rule[0].ports["http"]"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributePath {
    steps: Vec<PathStep>,
}

impl AttributePath {
    /// The empty path (the whole value).
    pub const fn root() -> Self {
        Self { steps: Vec::new() }
    }

    /// A path of a single attribute step, the usual start of a path.
    pub fn new(attribute: impl Into<String>) -> Self {
        Self::root().attr(attribute)
    }

    /// A path from a list of steps (for example converted from a protocol message).
    pub fn from_steps(steps: Vec<PathStep>) -> Self {
        Self { steps }
    }

    /// This path followed by an attribute step.
    #[must_use]
    pub fn attr(mut self, name: impl Into<String>) -> Self {
        self.steps.push(PathStep::Attribute(name.into()));
        self
    }

    /// This path followed by a map-key step.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.steps.push(PathStep::ElementKeyString(key.into()));
        self
    }

    /// This path followed by a list/tuple index step.
    #[must_use]
    pub fn index(mut self, index: i64) -> Self {
        self.steps.push(PathStep::ElementKeyInt(index));
        self
    }

    /// This path followed by `step`.
    #[must_use]
    pub fn with_step(mut self, step: PathStep) -> Self {
        self.steps.push(step);
        self
    }

    /// Append a step in place.
    pub fn push(&mut self, step: PathStep) {
        self.steps.push(step);
    }

    /// Remove and return the last step.
    pub fn pop(&mut self) -> Option<PathStep> {
        self.steps.pop()
    }

    /// The steps, outermost first.
    pub fn steps(&self) -> &[PathStep] {
        &self.steps
    }

    /// Consume the path into its steps.
    pub fn into_steps(self) -> Vec<PathStep> {
        self.steps
    }

    /// True for the root path.
    pub fn is_root(&self) -> bool {
        self.steps.is_empty()
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True for the root path (same as [`is_root`](Self::is_root)).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The path without its last step (`None` for the root).
    pub fn parent(&self) -> Option<AttributePath> {
        let (_, rest) = self.steps.split_last()?;
        Some(AttributePath {
            steps: rest.to_vec(),
        })
    }

    /// The last step, if any.
    pub fn last(&self) -> Option<&PathStep> {
        self.steps.last()
    }

    /// True if `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &AttributePath) -> bool {
        self.steps.starts_with(&prefix.steps)
    }

    /// Join two paths: `self` followed by all steps of `other`.
    #[must_use]
    pub fn join(mut self, other: &AttributePath) -> Self {
        self.steps.extend(other.steps.iter().cloned());
        self
    }
}

impl From<Vec<PathStep>> for AttributePath {
    fn from(steps: Vec<PathStep>) -> Self {
        Self { steps }
    }
}

impl FromIterator<PathStep> for AttributePath {
    fn from_iter<I: IntoIterator<Item = PathStep>>(iter: I) -> Self {
        Self {
            steps: iter.into_iter().collect(),
        }
    }
}

impl fmt::Display for AttributePath {
    /// Terraform-style rendering: `a.b["key"][0]`; the root renders as `(root)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return f.write_str("(root)");
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Attribute(name) if i == 0 => f.write_str(name)?,
                PathStep::Attribute(name) => write!(f, ".{name}")?,
                PathStep::ElementKeyString(k) => write!(f, "[{k:?}]")?,
                PathStep::ElementKeyInt(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_display() {
        let p = AttributePath::new("a").index(2).key("k\"q").attr("b");
        assert_eq!(p.to_string(), r#"a[2]["k\"q"].b"#);
        assert_eq!(p.len(), 4);
        assert_eq!(p.parent().unwrap().to_string(), r#"a[2]["k\"q"]"#);
        assert!(p.starts_with(&AttributePath::new("a").index(2)));
        assert!(!p.starts_with(&AttributePath::new("b")));
        assert_eq!(AttributePath::root().to_string(), "(root)");
        assert_eq!(AttributePath::root().parent(), None);
        let joined = AttributePath::new("x").join(&p);
        assert_eq!(joined.steps()[0], PathStep::Attribute("x".into()));
        assert_eq!(AttributePath::from_steps(p.clone().into_steps()), p);
    }
}
