/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * The series' header name (include/uapi/linux/msharefs.h), so that programs written for
 * it build unchanged with -I mshare-uapi/include. Define MSHAREFS_API_V3 for v2/v3.
 */
#ifndef MSHARE_LINUX_MSHAREFS_H
#define MSHARE_LINUX_MSHAREFS_H
#include "../mshare.h"
#endif
