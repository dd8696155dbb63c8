//! Hand-rolled `--name value` / `--flag` parsing: enough for a test tool, strict about unknown options.

use std::collections::HashMap;
use std::str::FromStr;

/// Options every subcommand accepts.
const COMMON: &[&str] = &["brokers", "config"];

pub struct Args {
    values: HashMap<String, Vec<String>>,
}

impl Args {
    /// Parses `argv`; `options` take a value (and may repeat), `flags` take none.
    pub fn parse(argv: &[String], options: &[&str], flags: &[&str]) -> Result<Args, String> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut iter = argv.iter();
        while let Some(arg) = iter.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
            // `--name=value` is accepted too.
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            let value = if flags.contains(&name) {
                String::new()
            } else if options.contains(&name) || COMMON.contains(&name) {
                match inline {
                    Some(v) => v,
                    None => iter
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?
                        .clone(),
                }
            } else {
                return Err(format!("unknown option --{name}"));
            };
            values.entry(name.to_string()).or_default().push(value);
        }
        Ok(Args { values })
    }

    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// Every value given for a repeatable option, in order.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--{name}: {v:?} is not a valid number"))
            })
            .transpose()
    }
}
