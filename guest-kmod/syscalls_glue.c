// SPDX-License-Identifier: GPL-2.0
/*
 * The mshare system calls (CONFIG_MSHARE_SYSCALLS, the core-mm series' third patch): the
 * core owns the numbers and calls the operations a driver registers. Ours are Rust's
 * (calls.rs, through syscalls.rs); only the table, which names this module as the owner
 * each call holds, is C.
 */
#include <linux/module.h>

#include "msharefs.h"

bool msharefs_kernel_has_syscalls(void)
{
	return IS_ENABLED(CONFIG_MSHARE_SYSCALLS);
}

#ifdef CONFIG_MSHARE_SYSCALLS
#include <linux/mshare.h>

static const struct mshare_syscall_ops msharefs_syscall_ops = {
	.owner		= THIS_MODULE,
	.create		= mshare_call_create,
	.attach		= mshare_call_attach,
	.detach		= mshare_call_detach,
	.map		= mshare_call_map,
	.unmap		= mshare_call_unmap,
	.protect	= mshare_call_protect,
	.advise		= mshare_call_advise,
};

int msharefs_syscalls_register(void)
{
	return mshare_register_syscall_ops(&msharefs_syscall_ops);
}

void msharefs_syscalls_unregister(void)
{
	mshare_unregister_syscall_ops(&msharefs_syscall_ops);
}
#else
int msharefs_syscalls_register(void)
{
	return 0;
}

void msharefs_syscalls_unregister(void)
{
}
#endif
