//! The guest kernel command line: what every boot needs, what this host needs, what the
//! user asked for, and the guest command after `--`.

use crate::memory::CMDLINE_MAX_SIZE;
use linux_loader::cmdline::Cmdline;
use mshare_uapi::formats::{guest_command_word, CommandWordError};

/// Every boot: the console on the 16550, reset through the keyboard controller (the VMM's
/// i8042 ends the VM), reboot at once on panic, no port-0x80 delays (each one is an exit).
pub const BASE: &str = "console=ttyS0 reboot=k panic=-1 io_delay=none";

/// Added on hosts whose KVM emulates guest kernel code (kvm_pvm): that emulator lacks
/// XSAVE/XRSTOR, POPCNT, CLAC/STAC, LDMXCSR and INT3, and ignores the VMM's CPUID masking,
/// so the guest must be told not to use them; the clocksource watchdog would time out.
pub const SOFTWARE_HYPERVISOR: &str =
    "noxsave no_int3_selftest tsc=reliable clearcpuid=popcnt,smap,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni";

/// Errors assembling the command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line: {source} (while adding {piece:?})")]
    Invalid {
        /// What was being added.
        piece: String,
        /// Why it was refused.
        source: linux_loader::cmdline::Error,
    },
    #[error(
        "guest command word {0:?} contains a double quote or a newline, which the kernel command line cannot carry"
    )]
    Quote(String),
    #[error("the guest command has a bare `--` word, after which the kernel drops every word; put the command in a script, or quote it into an `sh -c` word")]
    DoubleDash,
}

/// The pieces of a command line, in order.
#[derive(Debug, Clone, Default)]
pub struct CmdlineParts<'a> {
    /// Host-specific options ([`SOFTWARE_HYPERVISOR`] or nothing).
    pub host: Option<&'a str>,
    /// What the user gave with `--cmdline`.
    pub user: Option<&'a str>,
    /// Options the VMM adds for its devices (the exit device).
    pub devices: Vec<String>,
    /// The guest command, passed to /init after `--`.
    pub command: &'a [String],
}

/// Quotes a word for the kernel's argument parser (`mshare_uapi::formats`, shared with the
/// QEMU runner).
fn quote(word: &str) -> Result<String, CmdlineError> {
    guest_command_word(word).map_err(|e| match e {
        CommandWordError::DoubleDash => CmdlineError::DoubleDash,
        CommandWordError::Unquotable => CmdlineError::Quote(word.to_owned()),
    })
}

/// Builds the command line: [`BASE`], host options, user options, device options, `-- command`.
pub fn build(parts: &CmdlineParts<'_>) -> Result<Cmdline, CmdlineError> {
    fn invalid(piece: &str) -> impl FnOnce(linux_loader::cmdline::Error) -> CmdlineError + '_ {
        move |source| CmdlineError::Invalid { piece: piece.to_owned(), source }
    }
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(invalid("(capacity)"))?;
    cmdline.insert_str(BASE).map_err(invalid(BASE))?;
    for piece in parts.host.iter().chain(parts.user.iter()) {
        if !piece.trim().is_empty() {
            cmdline.insert_str(piece).map_err(invalid(piece))?;
        }
    }
    for piece in &parts.devices {
        cmdline.insert_str(piece).map_err(invalid(piece))?;
    }
    if !parts.command.is_empty() {
        let words = parts.command.iter().map(|w| quote(w)).collect::<Result<Vec<_>, _>>()?.join(" ");
        cmdline.insert_init_args(&words).map_err(invalid(&words))?;
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(cmdline: &Cmdline) -> String {
        cmdline.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn pieces_come_in_order_with_the_command_last() {
        let command = vec!["sh".to_owned(), "-c".to_owned(), "exit 7".to_owned()];
        let parts = CmdlineParts {
            host: Some(SOFTWARE_HYPERVISOR),
            user: Some("loglevel=4"),
            devices: vec!["mshare_exit=ioport:0xf4".to_owned()],
            command: &command,
        };
        assert_eq!(
            text(&build(&parts).unwrap()),
            format!("{BASE} {SOFTWARE_HYPERVISOR} loglevel=4 mshare_exit=ioport:0xf4 -- sh -c \"exit 7\"")
        );
    }

    #[test]
    fn an_empty_user_cmdline_adds_nothing() {
        let parts = CmdlineParts { user: Some("  "), ..Default::default() };
        assert_eq!(text(&build(&parts).unwrap()), BASE);
    }

    #[test]
    fn too_long_or_unquotable_input_is_refused() {
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        let err = build(&CmdlineParts { user: Some(&long), ..Default::default() }).unwrap_err();
        assert!(matches!(err, CmdlineError::Invalid { .. }), "{err}");
        let command = vec!["echo".to_owned(), "\"hi\"".to_owned()];
        assert!(matches!(
            build(&CmdlineParts { command: &command, ..Default::default() }),
            Err(CmdlineError::Quote(_))
        ));
        let command = vec!["mshare-vmm".to_owned(), "--".to_owned(), "ls".to_owned()];
        assert!(matches!(
            build(&CmdlineParts { command: &command, ..Default::default() }),
            Err(CmdlineError::DoubleDash)
        ));
    }
}
