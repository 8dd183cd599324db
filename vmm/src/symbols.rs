//! Kernel symbols from a System.map, to name the function a failing instruction is in.

use std::path::Path;

/// Text symbols sorted by address.
#[derive(Debug, Default)]
pub struct Symbols {
    symbols: Vec<(u64, String)>,
}

impl Symbols {
    /// Parses System.map text (`ffffffff81000000 T _text`); keeps code symbols.
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                matches!(kind, "T" | "t" | "W" | "w").then(|| (addr, name.to_owned()))
            })
            .collect();
        symbols.sort_unstable();
        Self { symbols }
    }

    /// Loads a System.map file.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// The System.map beside a kernel image (as in a kernel build tree), if there is one.
    pub fn beside(kernel: &Path) -> Option<Self> {
        let map = kernel.parent()?.join("System.map");
        Self::load(&map).ok().filter(|s| !s.symbols.is_empty())
    }

    /// `name+0xoffset` for an address inside a known symbol's range.
    pub fn describe(&self, addr: u64) -> Option<String> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr).checked_sub(1)?;
        let (start, name) = &self.symbols[i];
        // Past the last symbol there is no telling where it ends.
        self.symbols.get(i + 1)?;
        Some(format!("{name}+{:#x}", addr - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "ffffffff81000000 T _text\nffffffff81000100 t fpu__drop\nffffffff81000180 D some_data\nffffffff81000200 T next_fn\nffffffff81000300 T _etext\n";

    #[test]
    fn names_the_enclosing_function() {
        let symbols = Symbols::parse(MAP);
        assert_eq!(symbols.describe(0xffff_ffff_8100_0105).as_deref(), Some("fpu__drop+0x5"));
        assert_eq!(symbols.describe(0xffff_ffff_8100_0200).as_deref(), Some("next_fn+0x0"));
        assert_eq!(symbols.describe(0x1000), None);
        assert_eq!(symbols.describe(0xffff_ffff_8200_0000), None);
    }
}
