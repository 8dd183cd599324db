// SPDX-License-Identifier: GPL-2.0

//! A reader-writer semaphore that owns the data it protects: any number of readers at
//! once, or one writer. 7.3's `kernel::sync` has mutexes and spinlocks but no `rw_semaphore`;
//! a region's memory needs one, because every fault of every process reads it (a mutex
//! would serialise them) while it changes rarely, and a fault may sleep (folio lock,
//! page-table allocation) while it holds it.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::LockClassKey;
use kernel::types::{NotThreadSafe, Opaque};

/// Makes an [`RwSem`] with a lock class of its own (one per call site, as `new_mutex!`).
macro_rules! new_rwsem {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::rwsem::RwSem::new($inner, kernel::optional_name!($($name)?), kernel::static_lock_class!())
    };
}
pub(crate) use new_rwsem;

/// `T` behind a kernel `rw_semaphore`.
///
/// # Invariants
///
/// `sem` is initialised; `data` is read only through a [`ReadGuard`] (the semaphore held
/// shared) or a [`WriteGuard`], and written only through a [`WriteGuard`] (held exclusively).
#[pin_data]
pub(crate) struct RwSem<T> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    data: UnsafeCell<T>,
}

// SAFETY: the data moves with the semaphore; `T: Send` is all moving it needs.
unsafe impl<T: Send> Send for RwSem<T> {}
// SAFETY: readers share `&T` (so `T: Sync`), a writer gets `&mut T` from any thread (so
// `T: Send`); the semaphore keeps the two apart.
unsafe impl<T: Send + Sync> Sync for RwSem<T> {}

impl<T> RwSem<T> {
    /// An initialiser of the semaphore around `data` (use [`new_rwsem!`]).
    pub(crate) fn new(data: T, name: &'static CStr, key: Pin<&'static LockClassKey>) -> impl PinInit<Self> {
        pin_init!(Self {
            data: UnsafeCell::new(data),
            // SAFETY: `slot` is valid for the call; `name` and `key` are static.
            sem <- Opaque::ffi_init(|slot| unsafe { bindings::__init_rwsem(slot, name.as_char_ptr(), key.as_ptr()) }),
        })
    }

    /// Takes the semaphore shared (sleeping while a writer holds it).
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant); the guard releases it.
        unsafe { bindings::down_read(self.sem.get()) };
        ReadGuard { sem: self, _not_send: NotThreadSafe }
    }

    /// Takes the semaphore exclusively (sleeping while anyone holds it).
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: as in `read`.
        unsafe { bindings::down_write(self.sem.get()) };
        WriteGuard { sem: self, _not_send: NotThreadSafe }
    }
}

/// The semaphore held shared: `&T`. A semaphore is released by the task that took it.
pub(crate) struct ReadGuard<'a, T> {
    sem: &'a RwSem<T>,
    _not_send: NotThreadSafe,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: held shared: no writer meanwhile (type invariant of `RwSem`).
        unsafe { &*self.sem.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: taken shared by this guard's constructor, released once.
        unsafe { bindings::up_read(self.sem.sem.get()) };
    }
}

/// The semaphore held exclusively: `&mut T`.
pub(crate) struct WriteGuard<'a, T> {
    sem: &'a RwSem<T>,
    _not_send: NotThreadSafe,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: held exclusively (type invariant of `RwSem`).
        unsafe { &*self.sem.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: held exclusively, and `&mut self` makes this the only reference.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: taken exclusively by this guard's constructor, released once.
        unsafe { bindings::up_write(self.sem.sem.get()) };
    }
}
