// SPDX-License-Identifier: GPL-2.0
/*
 * Shared page tables (mode B), the page-table inlines Rust cannot call: each region granule
 * that has memory gets one PTE table from the core (CONFIG_SHARED_PGTABLE), which every
 * process mapping the granule links, and each GiB of a region mapped by whole-GiB windows
 * one PMD table. Which tables exist and what they map is decided in Rust (shared_table.rs).
 */
#include <linux/mm.h>
#include <linux/pgtable.h>
#include <asm/pgalloc.h>
#include <linux/rcupdate.h>
#include <linux/spinlock.h>

#include "msharefs.h"

bool mshare_kernel_shares_tables(void)
{
	return IS_ENABLED(CONFIG_SHARED_PGTABLE);
}

#ifdef CONFIG_SHARED_PGTABLE
struct ptdesc *mshare_table_alloc(void)
{
	return shared_pgtable_alloc();
}

/* The caller waited for a grace period since the table was last linked anywhere. */
void mshare_table_free(struct ptdesc *table)
{
	shared_pgtable_free(table);
}

/*
 * Points the table's entries at @each's page frames, or at the 2 MiB from @first on, or
 * clears them (neither), under the table's lock. Pages (a region's folios, a file's
 * pinned pages) get normal entries, which GUP and futexes follow (vm_normal_page()),
 * device memory special ones; either way the entries take no reference or mapcount: the
 * table is the region's, which holds the memory as long as the table maps it (a process's
 * RSS counts a table's pages once per link, see mshare_table_set_mapped()). Entries are
 * young, and dirty when writable, so the hardware has
 * nothing to update in a table shared by many processes. Callers flush the sharers' TLBs
 * when they take access away.
 */
void mshare_table_map(struct ptdesc *ptdesc, unsigned long first, const unsigned long *each,
		      bool writable, bool special)
{
	pgprot_t prot = vm_get_page_prot(VM_READ | VM_SHARED | (writable ? VM_WRITE : 0));
	pte_t *pte = ptdesc_address(ptdesc);
	spinlock_t *ptl = ptlock_ptr(ptdesc);
	int i;

	guard(spinlock)(ptl);
	for (i = 0; i < PTRS_PER_PTE; i++) {
		pte_t entry = __pte(0);
		unsigned long pfn = each ? each[i] : first ? first + i : 0;

		if (pfn) {
			entry = pte_mkyoung(pfn_pte(pfn, prot));
			if (special)
				entry = pte_mkspecial(entry);
			if (writable)
				entry = pte_mkdirty(entry);
		}
		set_pte(pte + i, entry);
	}
}

/*
 * Each process that links a table is charged the pages it maps (RssFile): that number
 * changes only while no process links the table, between these two calls.
 */
void mshare_table_hold_links(struct ptdesc *table)
{
	shared_pgtable_begin_change(table);
}

void mshare_table_set_mapped(struct ptdesc *table, unsigned int pages)
{
	shared_pgtable_set_mapped(table, pages);
}

/* How many processes link the table now. */
unsigned int mshare_table_sharers(struct ptdesc *table)
{
	return shared_pgtable_sharers(table);
}

/*
 * Shared PMD tables (mode B, windows of whole GiBs): one per GiB of a region, linked by
 * the core into each process's PUD entry. Each entry is the region's: a 2 MiB leaf over
 * a granule's physically contiguous memory, a shared PTE table, or none (a hole).
 */
struct ptdesc *mshare_pmd_table_alloc(void)
{
	return shared_pmd_table_alloc();
}

/*
 * Points entry @index at the 2 MiB from @leaf on (a leaf), or at @pte_table, or clears
 * it (neither), under the table's lock. A leaf takes no reference or mapcount, as the
 * PTE entries do not; it is young, and dirty when writable, for the same reason.
 */
void mshare_pmd_table_set(struct ptdesc *ptdesc, unsigned int index, unsigned long leaf,
			  struct ptdesc *pte_table, bool writable, bool special)
{
	pgprot_t prot = vm_get_page_prot(VM_READ | VM_SHARED | (writable ? VM_WRITE : 0));
	pmd_t *pmd = (pmd_t *)ptdesc_address(ptdesc) + index;
	spinlock_t *ptl = ptlock_ptr(ptdesc);
	pmd_t entry = __pmd(0);

	if (leaf) {
		entry = pmd_mkyoung(pmd_mkhuge(pfn_pmd(leaf, prot)));
		if (special)
			entry = pmd_mkspecial(entry);
		if (writable)
			entry = pmd_mkdirty(entry);
	}
	guard(spinlock)(ptl);
	/*
	 * The table is no mm's: x86's pmd_populate() uses the mm only for the
	 * paravirt alloc_pte hook, which does nothing outside Xen PV, and
	 * SHARED_PGTABLE excludes Xen PV.
	 */
	if (pte_table)
		pmd_populate(NULL, pmd, ptdesc_page(pte_table));
	else
		set_pmd(pmd, entry);
}

/*
 * Entry @index of a PMD table: 1 for a leaf (its first page frame in *@pfn, whether it is
 * writable in *@writable), 2 for a PTE table, 0 for none.
 */
int mshare_pmd_table_entry(struct ptdesc *table, unsigned int index, unsigned long *pfn,
			   bool *writable)
{
	pmd_t entry = pmdp_get((pmd_t *)ptdesc_address(table) + index);

	*pfn = 0;
	*writable = false;
	if (!pmd_present(entry))
		return 0;
	if (!pmd_leaf(entry))
		return 2;
	*pfn = pmd_pfn(entry);
	*writable = pmd_write(entry);
	return 1;
}

/* Entry @index of the table: its page frame (0 if none) and whether it is writable. */
unsigned long mshare_table_entry(struct ptdesc *table, unsigned int index, bool *writable)
{
	pte_t entry = ptep_get((pte_t *)ptdesc_address(table) + index);

	*writable = pte_present(entry) && pte_write(entry);
	return pte_present(entry) ? pte_pfn(entry) : 0;
}
#else
struct ptdesc *mshare_table_alloc(void)
{
	return NULL;
}

void mshare_table_hold_links(struct ptdesc *table)
{
}

void mshare_table_set_mapped(struct ptdesc *table, unsigned int pages)
{
}

unsigned int mshare_table_sharers(struct ptdesc *table)
{
	return 0;
}

void mshare_table_free(struct ptdesc *table)
{
}

void mshare_table_map(struct ptdesc *table, unsigned long first, const unsigned long *each,
		      bool writable, bool special)
{
}

unsigned long mshare_table_entry(struct ptdesc *table, unsigned int index, bool *writable)
{
	*writable = false;
	return 0;
}

struct ptdesc *mshare_pmd_table_alloc(void)
{
	return NULL;
}

void mshare_pmd_table_set(struct ptdesc *table, unsigned int index, unsigned long leaf,
			  struct ptdesc *pte_table, bool writable, bool special)
{
}

int mshare_pmd_table_entry(struct ptdesc *table, unsigned int index, unsigned long *pfn,
			   bool *writable)
{
	*pfn = 0;
	*writable = false;
	return 0;
}
#endif /* CONFIG_SHARED_PGTABLE */
