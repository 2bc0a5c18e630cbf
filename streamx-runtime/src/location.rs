//! Where in the user's source a consumer was declared, for error messages.

/// A source position, for error messages naming where a consumer was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file, as `file!()` gives it.
    pub file: &'static str,
    /// The line.
    pub line: u32,
    /// The column.
    pub column: u32,
}

impl SourceLocation {
    /// A location from its parts (the macro passes `file!()`, `line!()`, `column!()`).
    pub const fn new(file: &'static str, line: u32, column: u32) -> Self {
        SourceLocation { file, line, column }
    }

    /// The location of the caller of a `#[track_caller]` fn.
    #[track_caller]
    pub fn caller() -> Self {
        let l = std::panic::Location::caller();
        SourceLocation { file: l.file(), line: l.line(), column: l.column() }
    }
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}
