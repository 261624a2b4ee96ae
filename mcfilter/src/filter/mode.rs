//! XDP modes: the one asked for (`--mode`, the config's `mode`) and the one a link was made in.

use aya::programs::XdpMode;
use mcfilter_common::xdp_mode;

use crate::netlink;

/// How to attach: the command line's `--mode` and the config's `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Native if the driver supports it, else skb (generic).
    #[default]
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic XDP in the kernel's receive path, for any driver.
    Skb,
}

impl Mode {
    /// The modes to try, in order.
    pub fn tries(self) -> &'static [Attachment] {
        match self {
            Mode::Auto => &[Attachment::Native, Attachment::Skb],
            Mode::Native => &[Attachment::Native],
            Mode::Skb => &[Attachment::Skb],
        }
    }

    /// The mode tried first.
    pub fn first(self) -> Attachment {
        self.tries()[0]
    }
}

/// The XDP mode mcfilter attached a program in (it never offloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// The driver's own XDP hook.
    Native,
    /// Generic XDP in the kernel stack (any driver, slower).
    Skb,
}

impl From<Attachment> for XdpMode {
    fn from(attachment: Attachment) -> Self {
        match attachment {
            Attachment::Native => XdpMode::Driver,
            Attachment::Skb => XdpMode::Skb,
        }
    }
}

impl From<Attachment> for netlink::XdpMode {
    fn from(attachment: Attachment) -> Self {
        match attachment {
            Attachment::Native => netlink::XdpMode::Driver,
            Attachment::Skb => netlink::XdpMode::Skb,
        }
    }
}

/// An attachment's mode as the output names it: `unknown` for a record this build cannot read.
pub fn show_mode(mode: Option<Attachment>) -> &'static str {
    mode.map_or("unknown", Attachment::name)
}

impl Attachment {
    /// `native` or `skb`, as output and the state name it.
    pub fn name(self) -> &'static str {
        match self {
            Attachment::Native => "native",
            Attachment::Skb => "skb",
        }
    }

    pub(super) fn code(self) -> u32 {
        match self {
            Attachment::Native => xdp_mode::NATIVE,
            Attachment::Skb => xdp_mode::SKB,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            xdp_mode::NATIVE => Some(Attachment::Native),
            xdp_mode::SKB => Some(Attachment::Skb),
            _ => None,
        }
    }
}
