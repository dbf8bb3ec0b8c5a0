//! Step directory names, as Orbax's standard name format builds and parses them.

use ckpt_storage::TMP_SUFFIX;

use crate::{CkptError, Result};

/// The naming scheme of step directories: `[<prefix>_]<step>`, the step
/// zero-padded to `fixed_length` digits when that is above 1.
///
/// With prefix `step` and length 4, step 23 is `step_0023`. Parsing accepts
/// exactly the names that `standard_name_format` of orbax-checkpoint 0.12.8
/// accepts: no leading zeros beyond the padding, and at least
/// `fixed_length` digits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepNameFormat {
    /// Text before `_` and the step number, Orbax's `step_prefix`.
    pub prefix: Option<String>,
    /// Minimum number of digits, Orbax's `step_format_fixed_length`. The
    /// values 0 and 1 pad nothing.
    pub fixed_length: usize,
}

impl StepNameFormat {
    /// Plain step numbers, Orbax's default.
    pub fn new() -> StepNameFormat {
        StepNameFormat::default()
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> StepNameFormat {
        self.prefix = Some(prefix.into());
        self
    }

    /// Sets the minimum number of digits.
    pub fn with_fixed_length(mut self, digits: usize) -> StepNameFormat {
        self.fixed_length = digits;
        self
    }

    /// Returns the directory name of `step`.
    pub fn name(&self, step: u64) -> String {
        let digits = format!("{step:0width$}", width = self.fixed_length);
        match &self.prefix {
            Some(prefix) => format!("{prefix}_{digits}"),
            None => digits,
        }
    }

    /// Returns the step that the directory `name` holds, or `None` when
    /// this format does not produce `name`.
    pub fn parse(&self, name: &str) -> Option<u64> {
        let digits = match &self.prefix {
            Some(prefix) => name.strip_prefix(prefix.as_str())?.strip_prefix('_')?,
            None => name,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let padded = self.fixed_length > 1;
        let valid = if padded {
            // Either exactly `fixed_length` digits starting with 0, or at least
            // that many starting with 1-9.
            (digits.starts_with('0') && digits.len() == self.fixed_length)
                || (!digits.starts_with('0') && digits.len() >= self.fixed_length)
        } else {
            digits == "0" || !digits.starts_with('0')
        };
        if !valid {
            return None;
        }
        digits.parse().ok()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let Some(prefix) = &self.prefix else {
            return Ok(());
        };
        let invalid = |reason: &str| CkptError::InvalidOptions {
            option: "step_name_format.prefix".into(),
            reason: format!("{prefix:?} {reason}"),
        };
        if prefix.is_empty() || prefix.contains(['/', '\\', '\0']) || prefix == "." || prefix == ".." {
            return Err(invalid("is not one non-empty path segment"));
        }
        if prefix.contains(TMP_SUFFIX) {
            return Err(invalid("contains the suffix that marks unfinished saves"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_names() {
        let format = StepNameFormat::new();
        assert_eq!(format.name(23), "23");
        assert_eq!(format.parse("23"), Some(23));
        assert_eq!(format.parse("0"), Some(0));
        assert_eq!(format.parse("023"), None);
        assert_eq!(format.parse("metadata"), None);
        assert_eq!(format.parse("23.orbax-checkpoint-tmp"), None);
    }

    #[test]
    fn prefixed_padded_names() {
        let format = StepNameFormat::new().with_prefix("step").with_fixed_length(4);
        assert_eq!(format.name(23), "step_0023");
        assert_eq!(format.name(123_456), "step_123456");
        assert_eq!(format.parse("step_0023"), Some(23));
        assert_eq!(format.parse("step_123456"), Some(123_456));
        assert_eq!(format.parse("step_023"), None);
        assert_eq!(format.parse("step_00023"), None);
        assert_eq!(format.parse("step_123"), None);
        assert_eq!(format.parse("0023"), None);
        assert_eq!(format.parse("other_0023"), None);
    }

    #[test]
    fn overflowing_step_is_not_parsed() {
        assert_eq!(StepNameFormat::new().parse("99999999999999999999999"), None);
    }

    #[test]
    fn invalid_prefix_rejected() {
        for prefix in ["", "a/b", "..", "x.orbax-checkpoint-tmp"] {
            let format = StepNameFormat::new().with_prefix(prefix);
            assert!(format.validate().is_err(), "{prefix:?} was accepted");
        }
    }

    proptest! {
        #[test]
        fn name_parses_back(step in any::<u64>(), length in 0usize..8, prefixed in any::<bool>()) {
            let mut format = StepNameFormat::new().with_fixed_length(length);
            if prefixed {
                format = format.with_prefix("ckpt");
            }
            prop_assert_eq!(format.parse(&format.name(step)), Some(step));
        }
    }
}
