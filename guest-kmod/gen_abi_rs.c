// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * gen_abi_rs: include/uapi/mshare.h as Rust, for the module (Kbuild runs it) and for the
 * mshare-uapi crate (its build.rs runs it), so that the header stays the ABI's only
 * definition. It prints:
 *
 *  - the header's request numbers, flags, magic, paths and system call numbers as
 *    constants, each with the value the C compiler gives it;
 *  - for each structure, assertions that the Rust structure named after it (struct
 *    mshare_info: MshareInfo) has its size, and each of its fields at the same offset with
 *    the same integer type, so that a layout that differs does not compile.
 *
 * Usage: gen_abi_rs kernel|user >uapi_generated.rs
 *   kernel: pub(crate) items, requests as u32 (what the module's ioctl handlers get), and
 *           a structure's tail padding a field named `padding`: AsBytes needs every byte
 *           to be a field, and with this every byte is checked to be one;
 *   user:   pub items, requests as u64 (what the crate's API takes).
 *
 * It runs on the machine that builds, so it prints that machine's ioctl encoding and
 * layouts: the assertions below refuse one where those are not x86-64's.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mshare.h"

_Static_assert(_IOC_NRSHIFT == 0 && _IOC_TYPESHIFT == 8 && _IOC_SIZESHIFT == 16 &&
		       _IOC_DIRSHIFT == 30 && _IOC_WRITE == 1U && _IOC_READ == 2U,
	       "this machine's <linux/ioctl.h> encodes requests unlike x86-64, mshare's only architecture");
_Static_assert(sizeof(long) == 8 && _Alignof(__u64) == 8,
	       "this machine lays structures out unlike x86-64 (LP64, __u64 aligned to 8)");

static const struct {
	const char *name;
	unsigned long long value;
} requests[] = {
#define NAMED(name) { #name, name }
	NAMED(MSHAREFS_V1_GET_SIZE),
	NAMED(MSHAREFS_V1_SET_SIZE),
	NAMED(MSHAREFS_V1_CREATE_MAPPING),
	NAMED(MSHAREFS_V1_UNMAP),
	NAMED(MSHAREFS_V3_CREATE_MAPPING),
	NAMED(MSHAREFS_V3_UNMAP),
	NAMED(MSHAREFS_GET_STATS),
	NAMED(MSHAREFS_GET_STATS_72),
	NAMED(MSHAREFS_SET_PROT),
	NAMED(MSHARE_CREATE),
	NAMED(MSHARE_ATTACH),
	NAMED(MSHARE_DETACH),
	NAMED(MSHARE_MAP),
	NAMED(MSHARE_UNMAP),
	NAMED(MSHARE_PROTECT),
	NAMED(MSHARE_ADVISE),
}, values[] = {
	/* u32 on both sides: what struct fields and statfs's f_type hold. */
	NAMED(MSHAREFS_MAGIC),
	NAMED(MSHARE_ATTACH_READ_ONLY),
	NAMED(MSHARE_ATTACH_FIXED),
#undef NAMED
}, syscalls[] = {
	/* __NR_mshare_create: SYS_MSHARE_CREATE, as libc names system calls. */
#define SYSCALL(name) { #name, __NR_##name }
	SYSCALL(mshare_create),
	SYSCALL(mshare_attach),
	SYSCALL(mshare_detach),
	SYSCALL(mshare_map),
	SYSCALL(mshare_unmap),
	SYSCALL(mshare_protect),
	SYSCALL(mshare_advise),
#undef SYSCALL
};

static const struct {
	const char *name, *value;
} strings[] = {
	{ "MSHAREFS_MOUNT", MSHAREFS_MOUNT },
	{ "MSHARE_DEVICE", MSHARE_DEVICE },
};

/* The Rust type of an integer field; a field of any other type does not compile here. */
#define RUST_TYPE(e)                                                                    \
	_Generic((e), __u8: "u8", __u16: "u16", __u32: "u32", __u64: "u64", __s8: "i8", \
		 __s16: "i16", __s32: "i32", __s64: "i64")

struct field {
	const char *name, *rust_type;
	size_t offset, size;
};

#define FIELD(s, f)                                                                    \
	{ #f, RUST_TYPE(((struct s *)0)->f), offsetof(struct s, f), sizeof(((struct s *)0)->f) }

/*
 * C cannot list a structure's fields, so they are listed here, in order; a union is named
 * by its first member. A field missing from a list is found (see covered()) unless it sits
 * in tail padding, which no header change should do.
 */
static const struct layout {
	const char *name;
	size_t size, align;
	struct field fields[12];
} layouts[] = {
#define LAYOUT(s, ...) { #s, sizeof(struct s), _Alignof(struct s), { __VA_ARGS__ } }
	LAYOUT(mshare_info, FIELD(mshare_info, start), FIELD(mshare_info, size)),
	LAYOUT(mshare_create, FIELD(mshare_create, addr), FIELD(mshare_create, size),
	       FIELD(mshare_create, offset), FIELD(mshare_create, prot),
	       FIELD(mshare_create, flags), FIELD(mshare_create, fd)),
	LAYOUT(mshare_unmap, FIELD(mshare_unmap, addr), FIELD(mshare_unmap, size)),
	LAYOUT(mshare_stats, FIELD(mshare_stats, windows), FIELD(mshare_stats, faults),
	       FIELD(mshare_stats, backed), FIELD(mshare_stats, tables),
	       FIELD(mshare_stats, links), FIELD(mshare_stats, file_backed),
	       FIELD(mshare_stats, pmd_tables), FIELD(mshare_stats, pmd_links),
	       FIELD(mshare_stats, huge_leaf_bytes), FIELD(mshare_stats, links_now)),
	LAYOUT(mshare_attach, FIELD(mshare_attach, fd), FIELD(mshare_attach, flags),
	       FIELD(mshare_attach, offset), FIELD(mshare_attach, size),
	       FIELD(mshare_attach, addr)),
	LAYOUT(mshare_detach, FIELD(mshare_detach, addr), FIELD(mshare_detach, size)),
	LAYOUT(mshare_map, FIELD(mshare_map, fd), FIELD(mshare_map, prot),
	       FIELD(mshare_map, offset), FIELD(mshare_map, size),
	       FIELD(mshare_map, object_fd), FIELD(mshare_map, flags)),
	LAYOUT(mshare_range, FIELD(mshare_range, fd), FIELD(mshare_range, pad),
	       FIELD(mshare_range, offset), FIELD(mshare_range, size)),
	LAYOUT(mshare_protect, FIELD(mshare_protect, fd), FIELD(mshare_protect, prot)),
	LAYOUT(mshare_advise, FIELD(mshare_advise, fd), FIELD(mshare_advise, advice),
	       FIELD(mshare_advise, offset), FIELD(mshare_advise, size)),
#undef LAYOUT
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * The bytes of @l up to the end of its last field, if its fields follow one another with no
 * gap: a gap is a field missing from the list above, or padding the header should name.
 * 0 (after saying why) if not.
 */
static size_t covered(const struct layout *l)
{
	const struct field *f;
	size_t end = 0;

	for (f = l->fields; f->name; f++) {
		if (f->offset != end) {
			fprintf(stderr,
				"gen_abi_rs: struct %s: %s is at byte %zu, but the fields listed before it in gen_abi_rs.c end at %zu: list the header's fields in its order, none missing (or name the padding in mshare.h)\n",
				l->name, f->name, f->offset, end);
			return 0;
		}
		end = f->offset + f->size;
	}
	if (end > l->size || l->size - end >= l->align) {
		fprintf(stderr,
			"gen_abi_rs: struct %s is %zu bytes, but the fields listed for it in gen_abi_rs.c end at %zu: list the header's others\n",
			l->name, l->size, end);
		return 0;
	}
	return end;
}

/* struct mshare_info: MshareInfo. */
static void print_rust_name(const char *c_name)
{
	int upper = 1;

	for (; *c_name; c_name++) {
		if (*c_name == '_') {
			upper = 1;
			continue;
		}
		putchar(upper && *c_name >= 'a' && *c_name <= 'z' ? *c_name - 'a' + 'A' : *c_name);
		upper = 0;
	}
}

/* The Rust type that fills @n bytes of tail padding. */
static void print_padding_type(size_t n)
{
	if (n == 1 || n == 2 || n == 4)
		printf("u%zu", n * 8);
	else
		printf("[u8; %zu]", n);
}

static void print_layout(const struct layout *l, size_t end, int kernel)
{
	const struct field *f;

	printf("\n// struct %s: %zu bytes.\nconst _: () = assert!(core::mem::size_of::<", l->name,
	       l->size);
	print_rust_name(l->name);
	printf(">() == %zu, \"struct %s is %zu bytes in mshare.h\");\n", l->size, l->name, l->size);
	for (f = l->fields; f->name; f++) {
		printf("const _: () = assert!(core::mem::offset_of!(");
		print_rust_name(l->name);
		printf(", %s) == %zu, \"%s.%s is at byte %zu in mshare.h\");\n", f->name, f->offset,
		       l->name, f->name, f->offset);
		printf("const _: fn(&");
		print_rust_name(l->name);
		printf(") -> &%s = |s| &s.%s;\n", f->rust_type, f->name);
	}
	if (kernel && end < l->size) {
		printf("const _: () = assert!(core::mem::offset_of!(");
		print_rust_name(l->name);
		printf(", padding) == %zu, \"struct %s's tail padding starts at byte %zu\");\n", end,
		       l->name, end);
		printf("const _: fn(&");
		print_rust_name(l->name);
		printf(") -> &");
		print_padding_type(l->size - end);
		printf(" = |s| &s.padding;\n");
	}
}

static void print_string(const char *visibility, const char *name, const char *value)
{
	printf("/// `%s` in mshare.h.\n%s const %s: &str = \"", name, visibility, name);
	for (; *value; value++) {
		if (*value == '"' || *value == '\\')
			putchar('\\');
		putchar(*value);
	}
	printf("\";\n");
}

int main(int argc, char **argv)
{
	const char *visibility, *request_type;
	size_t ends[ARRAY_SIZE(layouts)];
	int kernel;
	size_t i;

	if (argc != 2 || (strcmp(argv[1], "kernel") && strcmp(argv[1], "user"))) {
		fprintf(stderr, "usage: gen_abi_rs kernel|user >uapi_generated.rs\n");
		return 2;
	}
	kernel = !strcmp(argv[1], "kernel");
	visibility = kernel ? "pub(crate)" : "pub";
	request_type = kernel ? "u32" : "u64";

	/* Nothing is printed for a header the lists above no longer describe. */
	for (i = 0; i < ARRAY_SIZE(layouts); i++) {
		ends[i] = covered(&layouts[i]);
		if (!ends[i])
			return 1;
	}
	for (i = 0; i < ARRAY_SIZE(values); i++) {
		if (values[i].value > UINT32_MAX) {
			fprintf(stderr, "gen_abi_rs: %s does not fit the u32 it is given in Rust\n",
				values[i].name);
			return 1;
		}
	}

	printf("// Generated by gen_abi_rs (guest-kmod/gen_abi_rs.c) from mshare.h: do not edit.\n\n");
	for (i = 0; i < ARRAY_SIZE(strings); i++)
		print_string(visibility, strings[i].name, strings[i].value);
	for (i = 0; i < ARRAY_SIZE(values); i++)
		printf("/// `%s` in mshare.h.\n%s const %s: u32 = %#llx;\n", values[i].name,
		       visibility, values[i].name, values[i].value);
	for (i = 0; i < ARRAY_SIZE(requests); i++)
		printf("/// `%s` in mshare.h.\n%s const %s: %s = %#llx;\n", requests[i].name,
		       visibility, requests[i].name, request_type, requests[i].value);
	for (i = 0; i < ARRAY_SIZE(syscalls); i++) {
		const char *c;

		printf("/// `__NR_%s` in mshare.h.\n%s const SYS_", syscalls[i].name, visibility);
		for (c = syscalls[i].name; *c; c++)
			putchar(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
		printf(": i64 = %llu;\n", syscalls[i].value);
	}
	for (i = 0; i < ARRAY_SIZE(layouts); i++)
		print_layout(&layouts[i], ends[i], kernel);

	if (fflush(stdout) || ferror(stdout)) {
		perror("gen_abi_rs: writing the Rust source");
		return 1;
	}
	return 0;
}
