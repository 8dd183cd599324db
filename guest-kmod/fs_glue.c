// SPDX-License-Identifier: GPL-2.0
/*
 * msharefs, the filesystem: in C only because Rust cannot register a filesystem in 7.3
 * (struct fs_context is opaque to its bindings). Its type and the parsing of its mount
 * options, the directory where regions are made by name, the internal mount that unnamed
 * regions (/dev/mshare) live on, and inode eviction. The instances (one per API) and what
 * their limits allow are Rust's (limits.rs); regions, their sizes and their ioctls too
 * (msharefs.rs, region.rs).
 *
 * /sys/fs/mshare holds one file per region plus "mshare_info". The root directory is
 * sticky and world-writable, like /tmp: anyone may create a region, its file mode decides
 * who may open (attach) it, and only its owner may remove it.
 */
#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/sysfs.h>

#include "glue.h"
#include "msharefs.h"

/* A region made by name in a mount (not a device's, not /dev/mshare's). */
static bool msharefs_named_region(struct inode *inode)
{
	return inode->i_op == &msharefs_region_iops && inode->i_fop == &msharefs_region_fops;
}

/* The instance whose limits bound @inode's memory: NULL for any but a named region. */
struct msharefs_instance *msharefs_limited(struct inode *inode)
{
	return inode && msharefs_named_region(inode) ? inode->i_sb->s_fs_info : NULL;
}

static struct vfsmount *msharefs_mnt;
static int msharefs_mnt_count;

/* A region reachable only through the file returned (and its copies, and mappings). */
struct file *msharefs_new_anonymous_file(void)
{
	struct inode *inode;
	struct file *file;
	int err = simple_pin_fs(&msharefs_type, &msharefs_mnt, &msharefs_mnt_count);

	if (err)
		return ERR_PTR(err);
	file = ERR_PTR(-ENOMEM);
	inode = new_inode(msharefs_mnt->mnt_sb);
	if (!inode)
		goto unpin;
	/* From here on, evicting the inode unpins msharefs. */
	inode->i_op = &msharefs_anonymous_iops;
	msharefs_region_mapping_init(inode);
	inode->i_private = mshare_region_new(inode);
	if (!inode->i_private) {
		iput(inode);
		return file;
	}
	inode->i_ino = get_next_ino();
	inode_init_owner(&nop_mnt_idmap, inode, NULL, S_IFREG | 0600);
	simple_inode_init_ts(inode);
	inode->i_fop = &msharefs_region_fops;
	/* The file's reference on its f_op owner, which fput() drops (alloc_file_pseudo takes none). */
	__module_get(THIS_MODULE);
	file = alloc_file_pseudo(inode, msharefs_mnt, "[mshare]", O_RDWR, &msharefs_region_fops);
	if (IS_ERR(file)) {
		module_put(THIS_MODULE);
		iput(inode);
	}
	return file;
unpin:
	simple_release_fs(&msharefs_mnt, &msharefs_mnt_count);
	return file;
}


static int msharefs_create(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry,
			   umode_t mode)
{
	struct msharefs_instance *in = dir->i_sb->s_fs_info;
	struct inode *inode;

	if (!mshare_instance_charge_region(in))
		return -ENOSPC;
	inode = new_inode(dir->i_sb);
	if (!inode)
		goto uncharge;
	msharefs_region_mapping_init(inode);
	inode->i_private = mshare_region_new(inode);
	if (!inode->i_private) {
		iput(inode);
		goto uncharge;
	}
	inode->i_ino = get_next_ino();
	inode_init_owner(&nop_mnt_idmap, inode, dir, S_IFREG | (mode & 0777));
	simple_inode_init_ts(inode);
	/* From here on, evicting the inode gives the region's count back. */
	inode->i_op = &msharefs_region_iops;
	inode->i_fop = &msharefs_region_fops;
	d_make_persistent(dentry, inode);
	inode_set_mtime_to_ts(dir, inode_set_ctime_current(dir));
	return 0;
uncharge:
	mshare_instance_uncharge_region(in);
	return -ENOMEM;
}

static const struct inode_operations msharefs_dir_iops = {
	.create		= msharefs_create,
	.lookup		= simple_lookup,
	.unlink		= simple_unlink,
};

static ssize_t msharefs_info_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	return mshare_info_read(buf, len, pos);
}

static const struct file_operations msharefs_info_fops = {
	.read		= msharefs_info_read,
	.llseek		= default_llseek,
};

static ssize_t msharefs_stats_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	return mshare_stats_read(buf, len, pos);
}

static const struct file_operations msharefs_stats_fops = {
	.read		= msharefs_stats_read,
	.llseek		= default_llseek,
};

static void msharefs_evict_inode(struct inode *inode)
{
	struct msharefs_instance *limited;

	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	/* Every region inode holds a reference to its region (until attach succeeded, none). */
	if ((inode->i_fop == &msharefs_region_fops || inode->i_fop == &msharefs_device_fops) &&
	    inode->i_private)
		mshare_region_release(inode->i_private, inode);
	if (inode->i_op == &msharefs_anonymous_iops)
		simple_release_fs(&msharefs_mnt, &msharefs_mnt_count);
	limited = msharefs_limited(inode);
	if (limited)
		mshare_instance_uncharge_region(limited);
}

static int msharefs_show_options(struct seq_file *m, struct dentry *root)
{
	struct msharefs_instance *in = root->d_sb->s_fs_info;
	u64 max_bytes = mshare_instance_max_bytes(in);
	unsigned int max_regions = mshare_instance_max_regions(in);

	seq_printf(m, ",api=v%d", mshare_instance_api(in));
	if (max_bytes)
		seq_printf(m, ",size=%llu", max_bytes);
	if (max_regions)
		seq_printf(m, ",nr_regions=%u", max_regions);
	return 0;
}

static const struct super_operations msharefs_sops = {
	.statfs		= simple_statfs,
	.evict_inode	= msharefs_evict_inode,
	.show_options	= msharefs_show_options,
};

struct inode *msharefs_new_inode(struct super_block *sb, umode_t mode)
{
	struct inode *inode = new_inode(sb);

	if (inode) {
		inode->i_ino = get_next_ino();
		inode->i_mode = mode;
		simple_inode_init_ts(inode);
	}
	return inode;
}

/* A persistent dentry named @name under @parent for @inode (dropped at unmount). */
int msharefs_add_entry(struct dentry *parent, const char *name, struct inode *inode)
{
	struct dentry *dentry = d_alloc_name(parent, name);

	if (!dentry) {
		iput(inode);
		return -ENOMEM;
	}
	d_make_persistent(dentry, inode);
	dput(dentry);
	return 0;
}

static int msharefs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	static const struct tree_descr files[] = {
		[2] = { "mshare_info", &msharefs_info_fops, 0444 },
		[3] = { "mshare_stats", &msharefs_stats_fops, 0444 },
		{ "" },
	};
	int err = simple_fill_super(sb, MSHAREFS_MAGIC, files);

	if (err)
		return err;
	sb->s_op = &msharefs_sops;
	/* Regions hold data, not code: PROT_EXEC is EPERM, as on a noexec mount. */
	sb->s_iflags |= SB_I_NOEXEC;
	d_inode(sb->s_root)->i_mode = S_IFDIR | 01777;
	d_inode(sb->s_root)->i_op = &msharefs_dir_iops;
	return msharefs_fill_devices(sb);
}

/*
 * Mount options: the API, "api=v1" (the January 2025 series, the default) or "api=v3" (the
 * v2/v3 series, whose request numbers collide with v1's), which picks the instance (every
 * mount of one API shows the same regions); and the instance's limits, "size=" (bytes of
 * memory its named regions may hold, K/M/G suffixes) and "nr_regions=" (0: no limit),
 * which a remount may change.
 */
enum { Opt_api, Opt_size, Opt_nr_regions };

/* Each API's number, which names its instance (mshare_instance()). */
static const struct constant_table msharefs_api_names[] = {
	{ "v1", 1 },
	{ "v3", 3 },
	{}
};

static const struct fs_parameter_spec msharefs_parameters[] = {
	fsparam_enum("api", Opt_api, msharefs_api_names),
	fsparam_string("size", Opt_size),
	fsparam_u32("nr_regions", Opt_nr_regions),
	{}
};

/* What a mount or remount asks for. */
struct msharefs_context {
	struct msharefs_instance *instance;
	u64 max_bytes;
	unsigned int max_regions;
	bool set_bytes;
	bool set_regions;
};

static int msharefs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct msharefs_context *ctx = fc->fs_private;
	struct msharefs_instance *instance;
	struct fs_parse_result result;
	int opt = fs_parse(fc, msharefs_parameters, param, &result);
	char *rest;

	if (opt < 0)
		return opt;
	switch (opt) {
	case Opt_api:
		instance = mshare_instance(result.uint_32);
		/* The API is the instance's: a remount cannot change it (mount another instance). */
		if (fc->purpose == FS_CONTEXT_FOR_RECONFIGURE && ctx->instance != instance)
			return invalfc(fc, "api= cannot change on remount; mount msharefs with -o api=v%d elsewhere",
				       mshare_instance_api(instance));
		ctx->instance = instance;
		return 0;
	case Opt_size:
		ctx->max_bytes = memparse(param->string, &rest);
		if (*rest)
			return invalfc(fc, "size=%s: give bytes, with K, M or G if you like (0: no limit)",
				       param->string);
		ctx->set_bytes = true;
		return 0;
	case Opt_nr_regions:
		ctx->max_regions = result.uint_32;
		ctx->set_regions = true;
		return 0;
	}
	return -EINVAL;
}

/* Sets the limits asked for; Rust refuses one below what is in use, as tmpfs does. */
static int msharefs_apply_limits(struct fs_context *fc)
{
	struct msharefs_context *ctx = fc->fs_private;
	u64 in_use;

	switch (mshare_instance_set_limits(ctx->instance, ctx->set_bytes ? &ctx->max_bytes : NULL,
					   ctx->set_regions ? &ctx->max_regions : NULL, &in_use)) {
	case MSHARE_LIMITS_SET:
		return 0;
	case MSHARE_LIMITS_REFUSED_SIZE:
		return invalfc(fc, "size=%llu is below the %llu bytes the regions hold",
			       ctx->max_bytes, in_use);
	case MSHARE_LIMITS_REFUSED_NR_REGIONS:
		return invalfc(fc, "nr_regions=%u is below the %llu regions there are",
			       ctx->max_regions, in_use);
	}
	return -EINVAL;
}

static int msharefs_fill_super_limited(struct super_block *sb, struct fs_context *fc)
{
	/* A new superblock: limits of an earlier one (all its mounts gone) do not carry over. */
	mshare_instance_clear_limits(sb->s_fs_info);
	return msharefs_fill_super(sb, fc);
}

static int msharefs_get_tree(struct fs_context *fc)
{
	struct msharefs_context *ctx = fc->fs_private;
	int err = get_tree_keyed(fc, msharefs_fill_super_limited, ctx->instance);

	return err ?: msharefs_apply_limits(fc);
}

static int msharefs_reconfigure(struct fs_context *fc)
{
	return msharefs_apply_limits(fc);
}

static void msharefs_free_fc(struct fs_context *fc)
{
	kfree(fc->fs_private);
}

static const struct fs_context_operations msharefs_context_ops = {
	.free		= msharefs_free_fc,
	.parse_param	= msharefs_parse_param,
	.get_tree	= msharefs_get_tree,
	.reconfigure	= msharefs_reconfigure,
};

static int msharefs_init_fs_context(struct fs_context *fc)
{
	struct msharefs_context *ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);

	if (!ctx)
		return -ENOMEM;
	ctx->instance = fc->purpose == FS_CONTEXT_FOR_RECONFIGURE ? fc->root->d_sb->s_fs_info :
								    mshare_instance(1);
	fc->fs_private = ctx;
	fc->ops = &msharefs_context_ops;
	return 0;
}

struct file_system_type msharefs_type = {
	.owner			= THIS_MODULE,
	.name			= "msharefs",
	.init_fs_context	= msharefs_init_fs_context,
	.parameters		= msharefs_parameters,
	.kill_sb		= kill_anon_super,
};

int msharefs_register(void)
{
	int err = sysfs_create_mount_point(fs_kobj, "mshare");

	if (err)
		return err;
	err = register_filesystem(&msharefs_type);
	if (err)
		sysfs_remove_mount_point(fs_kobj, "mshare");
	return err;
}

void msharefs_unregister(void)
{
	unregister_filesystem(&msharefs_type);
	sysfs_remove_mount_point(fs_kobj, "mshare");
}

