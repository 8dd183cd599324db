// SPDX-License-Identifier: GPL-2.0

//! `/dev/mshare`: the mshare calls ([`crate::calls`]) as ioctls, for kernels without the
//! system calls. Each handler copies its argument structure in, makes the call, and copies
//! out what it returns.

use crate::calls;
use crate::uapi::abi::{
    MSHARE_ADVISE, MSHARE_ATTACH, MSHARE_CREATE, MSHARE_DETACH, MSHARE_MAP, MSHARE_PROTECT, MSHARE_UNMAP,
};
use crate::uapi::{
    read_arg, write_arg, MshareAdvise, MshareAttach, MshareDetach, MshareMap, MshareProtect, MshareRange,
};
use kernel::{
    bindings,
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

/// `MSHARE_CREATE`: the argument is the flags themselves (0 or `O_CLOEXEC`).
fn create(arg: usize) -> Result<isize> {
    let flags = u32::try_from(arg).map_err(|_| EINVAL)?;
    Ok(calls::create(flags)? as isize)
}

/// `MSHARE_ATTACH`: `struct mshare_attach`, whose `addr` is set to the window's.
fn attach(arg: usize) -> Result<isize> {
    let MshareAttach { fd, flags, offset, size, addr } = read_arg(arg)?;
    let mapped = calls::attach(fd, offset, size, addr, flags)?;
    let result = MshareAttach { fd, flags, offset, size, addr: mapped as u64 };
    if let Err(e) = write_arg(arg, &result) {
        // SAFETY: undoing the mapping made above, in the same process.
        unsafe { bindings::vm_munmap(mapped, size as usize) };
        return Err(e);
    }
    Ok(0)
}

/// `MSHARE_DETACH`: `struct mshare_detach`.
fn detach(arg: usize) -> Result<isize> {
    let MshareDetach { addr, size } = read_arg(arg)?;
    calls::detach(addr, size)?;
    Ok(0)
}

/// `MSHARE_MAP`: `struct mshare_map`.
fn map(arg: usize) -> Result<isize> {
    let MshareMap { fd, prot, offset, size, object_fd, flags } = read_arg(arg)?;
    calls::map(fd, offset, size, prot, flags, object_fd)?;
    Ok(0)
}

/// `MSHARE_UNMAP`: `struct mshare_range`.
fn unmap(arg: usize) -> Result<isize> {
    let MshareRange { fd, pad, offset, size } = read_arg(arg)?;
    if pad != 0 {
        return Err(EINVAL);
    }
    calls::unmap(fd, offset, size)?;
    Ok(0)
}

/// `MSHARE_PROTECT`: `struct mshare_protect`, for the whole region.
fn protect(arg: usize) -> Result<isize> {
    let MshareProtect { fd, prot } = read_arg(arg)?;
    calls::protect(fd, None, prot)?;
    Ok(0)
}

/// `MSHARE_ADVISE`: `struct mshare_advise`.
fn advise(arg: usize) -> Result<isize> {
    let MshareAdvise { fd, advice, offset, size } = read_arg(arg)?;
    calls::advise(fd, offset, size, advice)?;
    Ok(0)
}

/// The `/dev/mshare` device.
pub(crate) struct DevMshare;

impl DevMshare {
    /// Registers `/dev/mshare`.
    pub(crate) fn register() -> impl PinInit<MiscDeviceRegistration<Self>, Error> {
        MiscDeviceRegistration::register(MiscDeviceOptions { name: c"mshare" })
    }
}

#[vtable]
impl MiscDevice for DevMshare {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<()> {
        Ok(())
    }

    fn ioctl(_device: (), _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            MSHARE_CREATE => create(arg),
            MSHARE_ATTACH => attach(arg),
            MSHARE_DETACH => detach(arg),
            MSHARE_MAP => map(arg),
            MSHARE_UNMAP => unmap(arg),
            MSHARE_PROTECT => protect(arg),
            MSHARE_ADVISE => advise(arg),
            _ => Err(ENOTTY),
        }
    }
}
