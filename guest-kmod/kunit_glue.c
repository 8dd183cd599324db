// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit's skip is a C macro that Rust cannot call yet: mark the running case skipped, with
 * the reason KTAP reports, so that a case that cannot run on this kernel reads as a skip,
 * never as a pass. Outside a KUnit case (or without KUnit) it does nothing.
 */
#include <kunit/test.h>
#include <kunit/test-bug.h>

#include "msharefs.h"

void mshare_kunit_mark_skipped(const char *reason)
{
#if IS_ENABLED(CONFIG_KUNIT)
	struct kunit *test = kunit_get_current_test();

	if (test)
		kunit_mark_skipped(test, "%s", reason);
#endif
}
