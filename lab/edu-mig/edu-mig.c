// SPDX-License-Identifier: GPL-2.0-only
/*
 * edu-mig: a vfio-pci variant driver that gives QEMU's "edu" PCI device (1234:11e8) live
 * migration support, for migscope's lab.
 *
 * edu is a DMA engine: src 0x80, dst 0x88, count 0x90, cmd 0x98 (bit 0 run, bit 1 edu->RAM,
 * bit 2 interrupt 0x100 when done); QEMU runs each transfer from a timer ~100 ms after the
 * command. This driver:
 *  - reports STOP_COPY | P2P (precopy=1 adds PRE_COPY with a real precopy stream);
 *  - walks every request one FSM arc at a time with vfio_mig_get_next_state();
 *  - on entering a quiescent state waits for the in-flight transfer (cmd bit 0 clears) and
 *    holds every later DMA start, interrupt raise or factorial start written by userspace
 *    (BAR0 is not mmappable: writes arrive through the device fd and are trapped here),
 *    releasing them when the device runs again;
 *  - STOP_COPY streams the register state through a data fd (one checksummed record),
 *    RESUMING validates it (length, magic, version, kind, checksum: an empty, truncated,
 *    oversized or corrupt stream fails the write or the SET out of RESUMING) and restores it;
 *  - dma_log=1 offers device DMA logging through vfio_pci_core's log_ops (where the kernel
 *    has the iova_bitmap helpers): every edu->RAM transfer userspace starts through BAR0 marks
 *    its IOVA pages dirty in per-range bitmaps, reported through the core's iova_bitmap_set();
 *  - VFIO_DEVICE_RESET returns the device to RUNNING.
 * storm=N adds an interrupt storm: a kthread per open device raises up to N interrupts a second
 * (writes to 0x60) while the device may DMA (RUNNING, PRE_COPY); quiescing stops it and waits
 * until its last interrupt was handled, running again restarts it (bug=irq_in_stop adds a
 * burst of it in the arc into STOP).
 * bug= makes it misbehave like real drivers can: early_p2p, irq_in_stop, fail_p2p, no_steps,
 * late_dma, accept_corrupt, swap_addr; and (issue 14) fw_crash, fail_stopcopy, late_flush,
 * precopy_lie, echo_flags, size_lie, stale_fd, lost_reset, slow_arc, async_state, dirty_miss.
 */

#include <linux/anon_inodes.h>
#include <linux/crc32.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/interrupt.h>
#include <linux/interval_tree.h>
#include <linux/iova_bitmap.h>
#include <linux/irq.h>
#include <linux/irqdesc.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/task_work.h>

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8

#define EDU_REG_ID 0x00
#define EDU_REG_LIVENESS 0x04
#define EDU_REG_FACT 0x08
#define EDU_REG_STATUS 0x20
#define EDU_REG_IRQ_STATUS 0x24
#define EDU_REG_IRQ_RAISE 0x60
#define EDU_REG_IRQ_ACK 0x64
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_CNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_DMA_RUN 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_DMA_IRQ 0x4
/* irq status bit of a DMA completion (hw/misc/edu.c DMA_IRQ) */
#define EDU_IRQ_DMA 0x100
#define EDU_IRQ_SETTLE_MS 20
#define EDU_STATUS_IRQFACT 0x80
/* irq status bit the storm raises (edu sends one MSI per write to 0x60 while MSI is on) */
#define EDU_IRQ_STORM 0x2
/* A stopped storm's interrupts must all be handled within this, or the driver says so. */
#define EDU_STORM_SETTLE_MS 200
/* ... and then the vector must stay quiet this long before the quiesce goes on. */
#define EDU_STORM_QUIET_US 2000

#define EDU_MIG_MAGIC 0x3130474d55444545ULL /* "EEDUMG01" little endian */
#define EDU_DRAIN_TIMEOUT_MS 3000

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define EDU_HAVE_PRECOPY 1
#endif

/*
 * Device DMA logging needs the core's iova_bitmap helpers. Up to 6.6 they are part of vfio.ko
 * (drivers/vfio/iova_bitmap.c, exported iova_bitmap_set); from 6.7 they live in
 * drivers/iommu/iommufd/iova_bitmap.c, built only with CONFIG_IOMMUFD_DRIVER, and without it
 * include/linux/iova_bitmap.h stubs them out (iova_bitmap_alloc() returns -EOPNOTSUPP), so
 * vfio_ioctl_device_feature_logging_report() fails whatever the driver does. Debian's 6.12
 * config has neither CONFIG_IOMMUFD nor a driver selecting IOMMUFD_DRIVER: there edu-mig offers
 * no DMA logging (dma_log=1 is noted at bind and ignored; the lab skips its dirty-miss cases).
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0) || IS_ENABLED(CONFIG_IOMMUFD_DRIVER)
#define EDU_HAVE_DMA_LOGGING 1
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
MODULE_IMPORT_NS("IOMMUFD");
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
MODULE_IMPORT_NS(IOMMUFD);
#endif
#endif
/* Device DMA logging: most ranges and pages one START may track. */
#define EDU_LOG_MAX_RANGES 16
#define EDU_LOG_MAX_PAGES (1UL << 26)
/* edu's default DMA mask (hw/misc/edu.c, edu_clamp_addr): 28 address bits. */
#define EDU_DMA_MASK ((1ULL << 28) - 1)

static bool precopy;
module_param(precopy, bool, 0644);
MODULE_PARM_DESC(precopy, "also report PRE_COPY (6.2+ kernels), read at bind time");

static char bug[32];
module_param_string(bug, bug, sizeof(bug), 0644);
MODULE_PARM_DESC(bug, "misbehave: early_p2p, irq_in_stop, fail_p2p, no_steps, late_dma, accept_corrupt, swap_addr, fw_crash, fail_stopcopy, late_flush, precopy_lie, echo_flags, size_lie, stale_fd, lost_reset, slow_arc, async_state, dirty_miss (read at each SET, reset and BAR0 write; dirty_miss at each transfer)");

static unsigned int slow_arc_ms = 5000;
module_param(slow_arc_ms, uint, 0644);
MODULE_PARM_DESC(slow_arc_ms,
		 "bug=slow_arc: milliseconds the RUNNING_P2P -> STOP arc stalls under state_mutex (keep it far below hung-task and RCU stall timeouts)");

static bool dma_log;
module_param(dma_log, bool, 0644);
MODULE_PARM_DESC(dma_log,
		 "offer device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*), read at bind time; needs the kernel's iova_bitmap helpers (up to 6.6, or CONFIG_IOMMUFD_DRIVER)");

static unsigned int fw_crash_after = 2;
module_param(fw_crash_after, uint, 0644);
MODULE_PARM_DESC(fw_crash_after,
		 "bug=fw_crash: SETs that succeed after open or reset before the firmware \"crashes\" (then every SET fails -EIO, ERROR until VFIO_DEVICE_RESET)");

static unsigned int late_dma_us = 50000;
module_param(late_dma_us, uint, 0644);
MODULE_PARM_DESC(late_dma_us,
		 "bug=late_dma: microseconds from the SET leaving the kernel to the late DMA write (which lands before the SET returns to userspace)");

static unsigned int storm;
module_param(storm, uint, 0644);
MODULE_PARM_DESC(storm,
		 "interrupt storm: raise up to N interrupts per second (writes to 0x60) while the device may DMA; 0 off (default). A storm thread is started at open when N > 0; N is reread at each batch");

enum edu_bug {
	EDU_BUG_NONE,
	EDU_BUG_EARLY_P2P,
	EDU_BUG_IRQ_IN_STOP,
	EDU_BUG_FAIL_P2P,
	EDU_BUG_NO_STEPS,
	EDU_BUG_LATE_DMA,
	EDU_BUG_FW_CRASH,
	EDU_BUG_FAIL_STOPCOPY,
	EDU_BUG_LATE_FLUSH,
	EDU_BUG_PRECOPY_LIE,
	EDU_BUG_ECHO_FLAGS,
	EDU_BUG_SIZE_LIE,
	/* issue 14, proof power part B */
	EDU_BUG_ACCEPT_CORRUPT,
	EDU_BUG_SWAP_ADDR,
	/* issue 14, proof power part C */
	EDU_BUG_STALE_FD,
	EDU_BUG_LOST_RESET,
	EDU_BUG_SLOW_ARC,
	EDU_BUG_ASYNC_STATE,
	EDU_BUG_DIRTY_MISS,
};

static enum edu_bug current_bug(void)
{
	if (sysfs_streq(bug, "early_p2p"))
		return EDU_BUG_EARLY_P2P;
	if (sysfs_streq(bug, "irq_in_stop"))
		return EDU_BUG_IRQ_IN_STOP;
	if (sysfs_streq(bug, "fail_p2p"))
		return EDU_BUG_FAIL_P2P;
	if (sysfs_streq(bug, "no_steps"))
		return EDU_BUG_NO_STEPS;
	if (sysfs_streq(bug, "late_dma"))
		return EDU_BUG_LATE_DMA;
	if (sysfs_streq(bug, "fw_crash"))
		return EDU_BUG_FW_CRASH;
	if (sysfs_streq(bug, "fail_stopcopy"))
		return EDU_BUG_FAIL_STOPCOPY;
	if (sysfs_streq(bug, "late_flush"))
		return EDU_BUG_LATE_FLUSH;
	if (sysfs_streq(bug, "precopy_lie"))
		return EDU_BUG_PRECOPY_LIE;
	if (sysfs_streq(bug, "echo_flags"))
		return EDU_BUG_ECHO_FLAGS;
	if (sysfs_streq(bug, "size_lie"))
		return EDU_BUG_SIZE_LIE;
	if (sysfs_streq(bug, "accept_corrupt"))
		return EDU_BUG_ACCEPT_CORRUPT;
	if (sysfs_streq(bug, "swap_addr"))
		return EDU_BUG_SWAP_ADDR;
	if (sysfs_streq(bug, "stale_fd"))
		return EDU_BUG_STALE_FD;
	if (sysfs_streq(bug, "lost_reset"))
		return EDU_BUG_LOST_RESET;
	if (sysfs_streq(bug, "slow_arc"))
		return EDU_BUG_SLOW_ARC;
	if (sysfs_streq(bug, "async_state"))
		return EDU_BUG_ASYNC_STATE;
	if (sysfs_streq(bug, "dirty_miss"))
		return EDU_BUG_DIRTY_MISS;
	return EDU_BUG_NONE;
}

/* The migration stream: one fixed record per chunk, little endian. */
struct edu_mig_record {
	__le64 magic;
	__le32 version;
	__le32 kind; /* 1 precopy (static part), 2 final */
	__le32 id;
	__le32 liveness; /* as read back (the device stores ~written) */
	__le32 status_irqfact;
	__le32 irq_status;
	__le64 dma_src;
	__le64 dma_dst;
	__le64 dma_cnt;
	__le64 held_cmd; /* a DMA command held while quiesced, started after resume */
	__le32 held_irq; /* interrupt bits held while quiesced */
	__le32 held_fact_valid;
	__le32 held_fact;
	__le32 csum; /* crc32_le over every byte before it */
};

#define EDU_REC_PRECOPY 1
#define EDU_REC_FINAL 2

struct edu_mig_dev;

/* One range of a DMA logging START: a dirty bit per page of [start, last]. */
struct edu_log_range {
	unsigned long start;
	unsigned long last;
	unsigned long *bits;
};

struct edu_mig_file {
	struct file *filp;
	struct mutex lock;
	struct edu_mig_dev *edev;
	u8 buf[2 * sizeof(struct edu_mig_record)];
	size_t len; /* valid bytes */
	size_t pos; /* read position (save) */
	bool saving;
	bool final; /* end of stream is permanent (STOP_COPY) */
	bool disabled;
};

struct edu_mig_dev {
	struct vfio_pci_core_device core;
	struct mutex state_mutex; /* migration state, held writes, files */
	enum vfio_device_mig_state state;
	void __iomem *bar0;
	enum edu_bug bug; /* latched per SET */
	/* Writes held while quiesced, replayed when the device runs again. */
	bool hold;
	u64 shadow_src, shadow_dst, shadow_cnt;
	bool src_dirty, dst_dirty, cnt_dirty;
	u64 held_cmd;
	u32 held_irq;
	bool held_fact_valid;
	u32 held_fact;
	/* Registers restored on RESUMING -> STOP (checked by read-back). */
	u32 pending_irq_restore;
	struct edu_mig_file *save;
	struct edu_mig_file *resume;
	/* bug=late_dma: where userspace last had edu write to RAM, and the write queued there. */
	u64 user_dst;
	u64 to_ram_dst;
	bool to_ram_seen;
	struct callback_head late_twork;
	u64 late_iova;
	u64 late_arc_ns; /* CLOCK_MONOTONIC (ktime_get_ns), the trace clock */
	const char *late_what; /* which bug= armed the late write, and after which arc */
	/* bug=fw_crash: SETs since open or the last reset. */
	unsigned int fw_sets;
	/* bug=async_state: the device already dropped to RUNNING once since open or reset. */
	bool async_fired;
	/*
	 * Device DMA logging (dma_log=1). log_lock nests inside state_mutex. A transfer started on
	 * the device marks its pages at once and again at every report while it is in flight: edu
	 * writes RAM ~100 ms after the command, so a page reported and cleared before the data
	 * landed must show up in the next report too.
	 */
	struct mutex log_lock;
	bool logging;
	u32 log_nranges;
	struct edu_log_range log[EDU_LOG_MAX_RANGES];
	bool log_inflight;
	u64 log_inflight_iova;
	u64 log_inflight_len;
	/* Pages bug=dirty_miss left out of the log since logging started (the lab reads it). */
	u64 log_dropped;
	/*
	 * storm=N: the thread raising the interrupts (from open to close) and whether it may. It
	 * raises in batches, each under vfio-pci-core's memory_lock (read); a SET holds that lock
	 * (write, edu_decode_begin) for all its arcs, so a quiescing arc that clears storm_on knows
	 * no raise is under way and none will follow until the device runs again.
	 */
	struct task_struct *storm_task;
	wait_queue_head_t storm_wq;
	bool storm_on;
	u64 storm_raised; /* raises since open, counted by the thread under memory_lock */
	/* At the storm's last start: raises so far, the vector's count, the time. */
	u64 storm_start_raised;
	unsigned int storm_start_handled;
	u64 storm_start_ns;
};

static struct edu_mig_dev *to_edev(struct vfio_device *vdev)
{
	return container_of(vdev, struct edu_mig_dev, core.vdev);
}

static bool dma_allowed(enum vfio_device_mig_state s)
{
	return s == VFIO_DEVICE_STATE_RUNNING
#ifdef EDU_HAVE_PRECOPY
	       || s == VFIO_DEVICE_STATE_PRE_COPY
#endif
		;
}

/* ---- the data fd ------------------------------------------------------------------------ */

static void edu_file_disable(struct edu_mig_file *f)
{
	mutex_lock(&f->lock);
	f->disabled = true;
	f->len = 0;
	f->pos = 0;
	mutex_unlock(&f->lock);
}

static int edu_file_release(struct inode *inode, struct file *filp)
{
	struct edu_mig_file *f = filp->private_data;

	edu_file_disable(f);
	mutex_destroy(&f->lock);
	kfree(f);
	return 0;
}

static ssize_t edu_file_read(struct file *filp, char __user *ubuf, size_t len, loff_t *pos)
{
	struct edu_mig_file *f = filp->private_data;
	ssize_t done;

	if (pos)
		return -ESPIPE;
	mutex_lock(&f->lock);
	if (f->disabled || !f->saving) {
		done = -ENODEV;
		goto out;
	}
	if (f->pos >= f->len) {
		/* PRE_COPY: temporary end of stream; STOP_COPY: permanent. */
		done = f->final ? 0 : -ENOMSG;
		goto out;
	}
	done = min_t(size_t, len, f->len - f->pos);
	if (copy_to_user(ubuf, f->buf + f->pos, done)) {
		done = -EFAULT;
		goto out;
	}
	f->pos += done;
out:
	mutex_unlock(&f->lock);
	return done;
}

/*
 * bug=accept_corrupt: the driver takes whatever RESUMING is given, as hisi_acc_vfio_pci and
 * qat_vfio_pci did before their resume_write/load checks of the stream's length and match
 * data: no length, magic, version, kind or checksum check, and an oversized write keeps what
 * fits and claims the rest. True when those checks are skipped.
 */
static bool edu_accepts_corrupt(const struct edu_mig_dev *edev)
{
	return edev->bug == EDU_BUG_ACCEPT_CORRUPT;
}

static ssize_t edu_file_write(struct file *filp, const char __user *ubuf, size_t len, loff_t *pos)
{
	struct edu_mig_file *f = filp->private_data;
	ssize_t done;

	if (pos)
		return -ESPIPE;
	mutex_lock(&f->lock);
	if (f->disabled || f->saving) {
		done = -ENODEV;
		goto out;
	}
	done = len;
	if (len > sizeof(f->buf) - f->len) {
		/* More than any edu-mig stream: refused whole (the checks hisi and qat added). */
		if (!edu_accepts_corrupt(f->edev)) {
			done = -ENOSPC;
			goto out;
		}
		/* bug=accept_corrupt: keeps what fits and claims the rest was taken. */
		len = sizeof(f->buf) - f->len;
	}
	if (copy_from_user(f->buf + f->len, ubuf, len)) {
		done = -EFAULT;
		goto out;
	}
	f->len += len;
out:
	mutex_unlock(&f->lock);
	return done;
}

#ifdef EDU_HAVE_PRECOPY
#ifndef VFIO_PRECOPY_INFO_REINIT
/* include/uapi/linux/vfio.h since the PRECOPY_INFOv2 series; absent from older headers. */
#define VFIO_PRECOPY_INFO_REINIT (1 << 0)
#endif

/*
 * bug=precopy_lie: initial_bytes does not fall as the initial data is read (it reports the
 * whole precopy record however much was read: the accounting bug class of mlx5's "fix
 * dirty_bytes/initial_bytes reporting" fixes). bug=echo_flags: the flags word comes back with
 * VFIO_PRECOPY_INFO_REINIT although the caller never enabled
 * VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2, when the word is reserved and must be 0
 * (vfio.h: "flags ... must be 0" without the opt-in). Caller holds f->lock.
 */
static void edu_precopy_bugs(struct edu_mig_dev *edev, struct edu_mig_file *f,
			     struct vfio_precopy_info *info)
{
	if (edev->bug == EDU_BUG_PRECOPY_LIE) {
		info->initial_bytes = f->len;
		pci_info(edev->core.pdev,
			 "edu-mig: bug=precopy_lie: initial_bytes %llu with %zu of %zu bytes read\n",
			 info->initial_bytes, f->pos, f->len);
	}
	if (edev->bug == EDU_BUG_ECHO_FLAGS) {
		info->flags = VFIO_PRECOPY_INFO_REINIT;
		pci_info(edev->core.pdev,
			 "edu-mig: bug=echo_flags: precopy_info flags %#x without the v2 opt-in\n",
			 info->flags);
	}
}
#endif

static long edu_file_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
#ifdef EDU_HAVE_PRECOPY
	struct edu_mig_file *f = filp->private_data;
	struct edu_mig_dev *edev = f->edev;
	struct vfio_precopy_info info;
	unsigned long minsz = offsetofend(struct vfio_precopy_info, dirty_bytes);
	long ret = 0;

	if (cmd != VFIO_MIG_GET_PRECOPY_INFO)
		return -ENOTTY;
	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	mutex_lock(&edev->state_mutex);
	if (edev->state != VFIO_DEVICE_STATE_PRE_COPY &&
	    edev->state != VFIO_DEVICE_STATE_PRE_COPY_P2P) {
		ret = -EINVAL;
		goto out;
	}
	mutex_lock(&f->lock);
	info.flags = 0;
	info.initial_bytes = f->len > f->pos ? f->len - f->pos : 0;
	/* The register file is re-sent whole in STOP_COPY: report it as dirty. */
	info.dirty_bytes = sizeof(struct edu_mig_record);
	edu_precopy_bugs(edev, f, &info);
	mutex_unlock(&f->lock);
	if (copy_to_user((void __user *)arg, &info, minsz))
		ret = -EFAULT;
out:
	mutex_unlock(&edev->state_mutex);
	return ret;
#else
	return -ENOTTY;
#endif
}

static const struct file_operations edu_file_fops = {
	.owner = THIS_MODULE,
	.read = edu_file_read,
	.write = edu_file_write,
	.unlocked_ioctl = edu_file_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = edu_file_release,
};

static struct edu_mig_file *edu_file_new(struct edu_mig_dev *edev, bool saving)
{
	struct edu_mig_file *f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);

	if (!f)
		return ERR_PTR(-ENOMEM);
	f->filp = anon_inode_getfile("edu_mig", &edu_file_fops, f, saving ? O_RDONLY : O_WRONLY);
	if (IS_ERR(f->filp)) {
		struct file *err = f->filp;

		kfree(f);
		return ERR_CAST(err);
	}
	stream_open(f->filp->f_inode, f->filp);
	mutex_init(&f->lock);
	f->edev = edev;
	f->saving = saving;
	return f;
}

/* Ends the device's data sessions (the fds stay open until userspace closes them). */
static void edu_disable_files(struct edu_mig_dev *edev)
{
	if (edev->save) {
		edu_file_disable(edev->save);
		fput(edev->save->filp);
		edev->save = NULL;
	}
	if (edev->resume) {
		edu_file_disable(edev->resume);
		fput(edev->resume->filp);
		edev->resume = NULL;
	}
}

/* ---- device register access ------------------------------------------------------------ */

static u32 edu_record_csum(const struct edu_mig_record *r);

static void edu_snapshot(struct edu_mig_dev *edev, struct edu_mig_record *r, u32 kind)
{
	void __iomem *b = edev->bar0;

	memset(r, 0, sizeof(*r));
	r->magic = cpu_to_le64(EDU_MIG_MAGIC);
	r->version = cpu_to_le32(1);
	r->kind = cpu_to_le32(kind);
	r->id = cpu_to_le32(ioread32(b + EDU_REG_ID));
	r->liveness = cpu_to_le32(ioread32(b + EDU_REG_LIVENESS));
	r->status_irqfact = cpu_to_le32(ioread32(b + EDU_REG_STATUS) & EDU_STATUS_IRQFACT);
	r->irq_status = cpu_to_le32(ioread32(b + EDU_REG_IRQ_STATUS));
	r->dma_src = cpu_to_le64(edev->src_dirty ? edev->shadow_src : readq(b + EDU_REG_DMA_SRC));
	r->dma_dst = cpu_to_le64(edev->dst_dirty ? edev->shadow_dst : readq(b + EDU_REG_DMA_DST));
	r->dma_cnt = cpu_to_le64(edev->cnt_dirty ? edev->shadow_cnt : readq(b + EDU_REG_DMA_CNT));
	r->held_cmd = cpu_to_le64(edev->held_cmd);
	r->held_irq = cpu_to_le32(edev->held_irq);
	r->held_fact_valid = cpu_to_le32(edev->held_fact_valid);
	r->held_fact = cpu_to_le32(edev->held_fact);
	r->csum = cpu_to_le32(edu_record_csum(r));
}

/*
 * Interrupts of the device's MSI vector handled so far, summed over CPUs: the descriptor's
 * kstat_irqs, which handle_edge_irq() (kernel/irq/chip.c) counts before it runs the handler
 * (where irq:irq_handler_entry fires). 0 without MSI.
 */
static unsigned int edu_irqs_handled(struct pci_dev *pdev)
{
	struct irq_data *data;
	struct irq_desc *desc;
	unsigned int n = 0;
	int irq, cpu;

	if (!pdev->msi_enabled)
		return 0;
	irq = pci_irq_vector(pdev, 0);
	data = irq < 0 ? NULL : irq_get_irq_data(irq);
	if (!data)
		return 0;
	desc = irq_data_to_desc(data);
	for_each_possible_cpu(cpu)
		n += irq_desc_kstat_cpu(desc, cpu);
	return n;
}

/*
 * Waits until an MSI the device has sent is handled: its vector's count moves past `before`,
 * taken before the device could send it. edu sends a DMA completion MSI in the same step that
 * clears EDU_DMA_RUN (hw/misc/edu.c edu_dma_timer), and a raise on the write to 0x60, so it
 * has left the device when the driver sees it, but it is a posted write that reaches its
 * handler later (1 ms to tens of ms under a loaded TCG host): a drain must not report the
 * device quiesced before its transfer's interrupt is in, nor bug=irq_in_stop leave STOP
 * before its interrupt is.
 */
static void edu_wait_irq_handled(struct edu_mig_dev *edev, unsigned int before)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(EDU_DRAIN_TIMEOUT_MS);

	while (edu_irqs_handled(edev->core.pdev) == before) {
		if (time_after(jiffies, deadline)) {
			pci_warn(edev->core.pdev,
				 "edu-mig: an interrupt it waited for was not handled in %d ms\n",
				 EDU_DRAIN_TIMEOUT_MS);
			return;
		}
		usleep_range(500, 1000);
	}
}

/*
 * Waits for the in-flight transfer to finish (cmd bit 0 clears) and, when it raised its
 * completion MSI, for that interrupt to be handled. Returns the ms waited (0: nothing was in
 * flight) or -ETIMEDOUT.
 */
static int edu_wait_dma(struct edu_mig_dev *edev)
{
	unsigned long start = jiffies;
	unsigned long deadline = start + msecs_to_jiffies(EDU_DRAIN_TIMEOUT_MS);
	struct pci_dev *pdev = edev->core.pdev;
	/* Taken before the read that finds the transfer running: its MSI is not sent yet. */
	unsigned int handled = edu_irqs_handled(pdev);
	u64 cmd = readq(edev->bar0 + EDU_REG_DMA_CMD);
	bool waited = false;

	while (cmd & EDU_DMA_RUN) {
		if (time_after(jiffies, deadline)) {
			pci_warn(edev->core.pdev, "edu-mig: DMA still running after %d ms\n",
				 EDU_DRAIN_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		waited = true;
		usleep_range(2000, 5000);
		cmd = readq(edev->bar0 + EDU_REG_DMA_CMD);
	}
	if ((cmd & EDU_DMA_IRQ) && pdev->msi_enabled) {
		if (waited)
			edu_wait_irq_handled(edev, handled);
		else if (ioread32(edev->bar0 + EDU_REG_IRQ_STATUS) & EDU_IRQ_DMA)
			/*
			 * A transfer that ended just before this quiesce, its completion not
			 * yet acknowledged: its MSI may still be on its way to the handler,
			 * and no count taken here can tell. Give it the time it takes.
			 */
			msleep(EDU_IRQ_SETTLE_MS);
		synchronize_irq(pci_irq_vector(pdev, 0));
	}
	return waited ? max(1u, jiffies_to_msecs(jiffies - start)) : 0;
}

/* ---- storm=N: an interrupt storm while the device may DMA ------------------------------ */

/*
 * The storm thread follows the vector's effective affinity: an MSI it raises on the CPU that
 * handles the vector is taken before its next raise (the write to 0x60 sends the MSI
 * synchronously: hw/misc/edu.c edu_raise_irq -> msi_notify), so none is left pending in the
 * local APIC when the thread stops, and none coalesces with the next.
 */
static bool edu_storm_follow_irq(struct edu_mig_dev *edev)
{
	int irq = pci_irq_vector(edev->core.pdev, 0);
	struct irq_data *d = irq < 0 ? NULL : irq_get_irq_data(irq);
	const struct cpumask *m;

	/*
	 * Only once the user's handler is requested: vfio-pci enables MSI before it requests the
	 * vector's irq, and a raise between the two is never handled (a lab run lost one batch).
	 */
	if (!d || !irq_desc_has_action(irq_data_to_desc(d)))
		return false;
	m = irq_data_get_effective_affinity_mask(d);
	if (!cpumask_empty(m) && !cpumask_equal(m, current->cpus_ptr))
		set_cpus_allowed_ptr(current, m);
	return true;
}

static int edu_storm_fn(void *arg)
{
	struct edu_mig_dev *edev = arg;
	struct pci_dev *pdev = edev->core.pdev;

	while (!kthread_should_stop()) {
		unsigned int rate = READ_ONCE(storm), batch, i;
		unsigned long period_us;
		bool raised = false;
		u16 cmd;

		wait_event_interruptible(edev->storm_wq,
					 READ_ONCE(edev->storm_on) || kthread_should_stop());
		if (kthread_should_stop())
			break;
		if (!rate) {
			msleep_interruptible(10);
			continue;
		}
		/* Batches of ~1 ms at the rate asked, never faster: up to `storm` per second. */
		batch = max(1u, rate / 1000);
		period_us = max(1ULL, div_u64((u64)batch * USEC_PER_SEC, rate));
		down_read(&edev->core.memory_lock);
		if (READ_ONCE(edev->storm_on) && edev->bar0 && pdev->msi_enabled) {
			pci_read_config_word(pdev, PCI_COMMAND, &cmd);
			if ((cmd & PCI_COMMAND_MEMORY) && edu_storm_follow_irq(edev)) {
				for (i = 0; i < batch; i++)
					iowrite32(EDU_IRQ_STORM, edev->bar0 + EDU_REG_IRQ_RAISE);
				edev->storm_raised += batch;
				raised = true;
			}
		}
		up_read(&edev->core.memory_lock);
		if (raised)
			usleep_range(period_us, period_us + period_us / 8 + 10);
		else
			msleep_interruptible(10); /* no MSI handler yet (or decoding off) */
	}
	return 0;
}

/* Lets the storm run (the device may DMA). */
static void edu_storm_start(struct edu_mig_dev *edev)
{
	if (!edev->storm_task || READ_ONCE(edev->storm_on))
		return;
	edev->storm_start_raised = edev->storm_raised;
	edev->storm_start_handled = edu_irqs_handled(edev->core.pdev);
	edev->storm_start_ns = ktime_get_ns();
	WRITE_ONCE(edev->storm_on, true);
	wake_up(&edev->storm_wq);
}

/*
 * Stops the storm in a quiescing arc (caller holds state_mutex and memory_lock for writing,
 * so the thread is between batches) and waits until the last interrupt it raised was handled:
 * the vector's count has moved by at least the raises since the storm started (its DMA
 * completions only make that come sooner; the drain that follows waits for those), then no
 * interrupt for EDU_STORM_QUIET_US, then synchronize_irq(). The lab reads the line.
 */
static void edu_storm_stop(struct edu_mig_dev *edev)
{
	struct pci_dev *pdev = edev->core.pdev;
	unsigned long deadline = jiffies + msecs_to_jiffies(EDU_STORM_SETTLE_MS);
	u64 t0 = ktime_get_ns(), raised, ms;
	unsigned int handled, before;
	bool settled = true;

	if (!edev->storm_task || !READ_ONCE(edev->storm_on))
		return;
	WRITE_ONCE(edev->storm_on, false);
	raised = edev->storm_raised - edev->storm_start_raised;
	while ((u64)(edu_irqs_handled(pdev) - edev->storm_start_handled) < raised) {
		if (time_after(jiffies, deadline)) {
			settled = false;
			break;
		}
		usleep_range(200, 400);
	}
	do {
		before = edu_irqs_handled(pdev);
		usleep_range(EDU_STORM_QUIET_US, EDU_STORM_QUIET_US + 500);
		handled = edu_irqs_handled(pdev);
	} while (handled != before && !time_after(jiffies, deadline + HZ));
	if (pdev->msi_enabled)
		synchronize_irq(pci_irq_vector(pdev, 0));
	ms = div_u64(t0 - edev->storm_start_ns, NSEC_PER_MSEC);
	pci_info(pdev,
		 "edu-mig: storm stopped: %llu interrupts raised in %llu ms (%llu/s), %u handled, quiet after %llu us%s\n",
		 raised, ms, ms ? div_u64(raised * MSEC_PER_SEC, ms) : 0,
		 handled - edev->storm_start_handled, div_u64(ktime_get_ns() - t0, NSEC_PER_USEC),
		 settled ? "" : " (fewer handled than raised: coalesced in the APIC?)");
}

/*
 * bug=irq_in_stop with storm=N: the storm goes on in STOP for 10 ms worth of it (N/100
 * interrupts, at least one), raised in this arc (caller holds memory_lock: the thread is
 * between batches), and the arc returns only once they were handled and the vector was quiet
 * for EDU_STORM_QUIET_US. So every one of them lands strictly inside the SET to STOP, from
 * RUNNING_P2P: after the quiesce, and away from any SET's entry or return. (A storm left
 * running across the SET back to RUNNING would put interrupts microseconds from that SET's
 * entry, where two recorders' own clock reads of it disagree on which side they fall: a lab
 * run counted 810 and 809.) The lab reads the line.
 */
static void edu_storm_in_stop(struct edu_mig_dev *edev)
{
	struct pci_dev *pdev = edev->core.pdev;
	unsigned int n = max(1u, READ_ONCE(storm) / 100), i, before, handled;
	unsigned int start = edu_irqs_handled(pdev);
	unsigned long deadline = jiffies + msecs_to_jiffies(EDU_STORM_SETTLE_MS);

	if (!pdev->msi_enabled)
		return;
	for (i = 0; i < n; i++)
		iowrite32(EDU_IRQ_STORM, edev->bar0 + EDU_REG_IRQ_RAISE);
	edev->storm_raised += n;
	do {
		before = edu_irqs_handled(pdev);
		usleep_range(EDU_STORM_QUIET_US, EDU_STORM_QUIET_US + 500);
		handled = edu_irqs_handled(pdev);
	} while (handled != before && !time_after(jiffies, deadline + HZ));
	synchronize_irq(pci_irq_vector(pdev, 0));
	pci_info(pdev, "edu-mig: bug=irq_in_stop: %u storm interrupts raised in STOP, %u handled\n",
		 n, handled - start);
}

/* Quiesce: waits for the in-flight transfer; the lab counts the line (DMA was in flight). */
static int edu_drain_dma(struct edu_mig_dev *edev)
{
	int ms = edu_wait_dma(edev);

	if (ms > 0)
		pci_info(edev->core.pdev, "edu-mig: drained in-flight DMA in %d ms\n", ms);
	return ms < 0 ? ms : 0;
}

/*
 * The driver's own BAR0 accesses (quiesce, save, restore, quiet) need memory decoding, which
 * the user owns: QEMU leaves it to its guest (an idle guest may never enable it) and its
 * reset path clears it (hw/vfio/pci.c vfio_pci_pre_reset). Turn it on for the driver's work
 * and put the user's value back, under vfio-pci-core's memory_lock as its own PCI_COMMAND
 * writes are (drivers/vfio/pci/vfio_pci_config.c vfio_basic_config_write).
 */
/* ---- device DMA logging (dma_log=1) ----------------------------------------------------- */

/*
 * Marks [iova, iova + len) dirty in the range that holds each page (caller holds log_lock).
 * bug=dirty_miss drops the last page of every edu transfer from the log, so a transfer within
 * one page (the lab's workload) is not logged at all: the class of mlx5's tracker losing the
 * tail of a report, pds_vfio_pci's dirty_sync and QEMU's missed 64-bit window.
 */
static void edu_log_mark_locked(struct edu_mig_dev *edev, u64 iova, u64 len, bool transfer)
{
	u64 first, last, p;
	u32 i;

	if (!edev->logging || !len)
		return;
	first = iova >> PAGE_SHIFT;
	last = (iova + len - 1) >> PAGE_SHIFT;
	if (transfer && current_bug() == EDU_BUG_DIRTY_MISS) {
		edev->log_dropped++;
		if (last == first)
			return;
		last--;
	}
	for (p = first; p <= last; p++) {
		unsigned long a = p << PAGE_SHIFT;

		for (i = 0; i < edev->log_nranges; i++) {
			struct edu_log_range *r = &edev->log[i];

			if (a >= r->start && a <= r->last) {
				set_bit((a - r->start) >> PAGE_SHIFT, r->bits);
				break;
			}
		}
	}
}

static void edu_log_mark(struct edu_mig_dev *edev, u64 iova, u64 len, bool transfer)
{
	mutex_lock(&edev->log_lock);
	edu_log_mark_locked(edev, iova, len, transfer);
	mutex_unlock(&edev->log_lock);
}

/*
 * Notes a command about to reach edu's CMD register: the edu->RAM transfer it starts is
 * logged, and stays in flight (re-marked at each report) until edu clears its run bit. Returns
 * with log_lock held: the caller writes the command and then calls edu_log_command_end(), so
 * no report can see the transfer marked but edu not yet running it (and drop it as done).
 */
static void edu_log_command_begin(struct edu_mig_dev *edev, u64 cmd)
{
	void __iomem *b = edev->bar0;
	u64 dst, cnt;

	mutex_lock(&edev->log_lock);
	if (!b || !edev->logging ||
	    (cmd & (EDU_DMA_RUN | EDU_DMA_TO_RAM)) != (EDU_DMA_RUN | EDU_DMA_TO_RAM))
		return;
	/* edu ignores a command while a transfer runs (hw/misc/edu.c, edu_mmio_write). */
	if (readq(b + EDU_REG_DMA_CMD) & EDU_DMA_RUN)
		return;
	dst = readq(b + EDU_REG_DMA_DST) & EDU_DMA_MASK;
	cnt = readq(b + EDU_REG_DMA_CNT);
	edev->log_inflight = true;
	edev->log_inflight_iova = dst;
	edev->log_inflight_len = cnt;
	edu_log_mark_locked(edev, dst, cnt, true);
}

static void edu_log_command_end(struct edu_mig_dev *edev)
{
	mutex_unlock(&edev->log_lock);
}

static void edu_log_free(struct edu_mig_dev *edev)
{
	u32 i;

	for (i = 0; i < edev->log_nranges; i++) {
		vfree(edev->log[i].bits);
		edev->log[i].bits = NULL;
	}
	edev->log_nranges = 0;
	edev->logging = false;
	edev->log_inflight = false;
}

#ifdef EDU_HAVE_DMA_LOGGING
/*
 * DMA_LOGGING_START: vfio_ioctl_device_feature_logging_start() (drivers/vfio/vfio_main.c) has
 * checked the ranges (page aligned, not overlapping) and built the interval tree; one bitmap
 * of pages per range. vfio.h (struct vfio_log_ops): a second START without a STOP is refused.
 */
static int edu_log_start(struct vfio_device *vdev, struct rb_root_cached *ranges, u32 nnodes,
			 u64 *page_size)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	struct interval_tree_node *node;
	unsigned long total = 0;
	int ret = 0;
	u32 n = 0;

	if (nnodes > EDU_LOG_MAX_RANGES)
		return -E2BIG;
	mutex_lock(&edev->log_lock);
	if (edev->logging) {
		ret = -EBUSY;
		goto out;
	}
	for (node = interval_tree_iter_first(ranges, 0, ULONG_MAX); node;
	     node = interval_tree_iter_next(node, 0, ULONG_MAX)) {
		struct edu_log_range *r = &edev->log[n];
		unsigned long start = node->start & PAGE_MASK;
		unsigned long pages = ((node->last - start) >> PAGE_SHIFT) + 1;

		if (n == EDU_LOG_MAX_RANGES || pages > EDU_LOG_MAX_PAGES - total) {
			ret = -E2BIG;
			break;
		}
		r->bits = vzalloc(BITS_TO_LONGS(pages) * sizeof(unsigned long));
		if (!r->bits) {
			ret = -ENOMEM;
			break;
		}
		r->start = start;
		r->last = start + (pages << PAGE_SHIFT) - 1;
		total += pages;
		edev->log_nranges = ++n;
	}
	if (ret) {
		edu_log_free(edev);
		goto out;
	}
	edev->logging = true;
	edev->log_dropped = 0;
	/* The page size asked for is a hint; the driver tracks at its own granularity (vfio.h). */
	*page_size = PAGE_SIZE;
	pci_info(edev->core.pdev, "edu-mig: DMA logging started: %u ranges, %lu pages%s\n", n,
		 total, current_bug() == EDU_BUG_DIRTY_MISS ? " (bug=dirty_miss)" : "");
out:
	mutex_unlock(&edev->log_lock);
	return ret;
}

static int edu_log_stop(struct vfio_device *vdev)
{
	struct edu_mig_dev *edev = to_edev(vdev);

	mutex_lock(&edev->log_lock);
	/* The lab reads this line. */
	if (edev->logging)
		pci_info(edev->core.pdev,
			 "edu-mig: DMA logging stopped: %llu transfers' last pages dropped (bug=dirty_miss)\n",
			 edev->log_dropped);
	edu_log_free(edev);
	mutex_unlock(&edev->log_lock);
	return 0;
}

/*
 * DMA_LOGGING_REPORT, one chunk of the user's bitmap at a time (iova_bitmap_for_each() from
 * vfio_ioctl_device_feature_logging_report()): every dirty page of [iova, iova + length) is
 * set with iova_bitmap_set() and cleared here; a transfer still in flight is marked again for
 * the next report (its data may land after this one).
 */
static int edu_log_read_and_clear(struct vfio_device *vdev, unsigned long iova,
				  unsigned long length, struct iova_bitmap *dirty)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	unsigned long end = iova + length - 1;
	u32 i;

	mutex_lock(&edev->log_lock);
	if (!edev->logging) {
		mutex_unlock(&edev->log_lock);
		return -EINVAL;
	}
	for (i = 0; i < edev->log_nranges; i++) {
		struct edu_log_range *r = &edev->log[i];
		unsigned long lo = max(iova, r->start), hi = min(end, r->last), bit, stop;

		if (lo > hi)
			continue;
		stop = ((hi - r->start) >> PAGE_SHIFT) + 1;
		for (bit = find_next_bit(r->bits, stop, (lo - r->start) >> PAGE_SHIFT); bit < stop;
		     bit = find_next_bit(r->bits, stop, bit + 1)) {
			unsigned long a = r->start + (bit << PAGE_SHIFT);

			clear_bit(bit, r->bits);
			iova_bitmap_set(dirty, max(a, iova), PAGE_SIZE);
		}
	}
	if (edev->log_inflight) {
		u64 cmd = edev->bar0 ? readq(edev->bar0 + EDU_REG_DMA_CMD) : 0;

		if (cmd & EDU_DMA_RUN)
			edu_log_mark_locked(edev, edev->log_inflight_iova, edev->log_inflight_len,
					    true);
		else
			edev->log_inflight = false;
	}
	mutex_unlock(&edev->log_lock);
	return 0;
}

static const struct vfio_log_ops edu_log_ops = {
	.log_start = edu_log_start,
	.log_stop = edu_log_stop,
	.log_read_and_clear = edu_log_read_and_clear,
};
#endif

static u16 edu_decode_begin(struct edu_mig_dev *edev)
{
	struct pci_dev *pdev = edev->core.pdev;
	u16 cmd;

	down_write(&edev->core.memory_lock);
	pci_read_config_word(pdev, PCI_COMMAND, &cmd);
	if (!(cmd & PCI_COMMAND_MEMORY))
		pci_write_config_word(pdev, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY);
	return cmd;
}

static void edu_decode_end(struct edu_mig_dev *edev, u16 cmd)
{
	if (!(cmd & PCI_COMMAND_MEMORY))
		pci_write_config_word(edev->core.pdev, PCI_COMMAND, cmd);
	up_write(&edev->core.memory_lock);
}

/*
 * edu has no reset a VMM can use, so whatever one user leaves behind would reach the next:
 * a transfer still running (its DMA and completion interrupt land after the device changed
 * hands), an unacknowledged interrupt (with MSI off, edu keeps its INTx line asserted until
 * the status is acked: hw/misc/edu.c edu_raise_irq/edu_lower_irq), a factorial whose
 * completion interrupt is enabled. On open, close and VFIO_DEVICE_RESET the driver waits the
 * transfer out, disables the factorial interrupt and acks every status bit, as a variant
 * driver's open_device/close_device/reset quiesce their function. What it found is logged
 * (always on open: the lab checks that no earlier user left anything).
 */
static void edu_quiet(struct edu_mig_dev *edev, const char *why)
{
	void __iomem *b = edev->bar0;
	u16 cmd = edu_decode_begin(edev);
	int ms = edu_wait_dma(edev);
	u32 irq, status;

	status = ioread32(b + EDU_REG_STATUS);
	iowrite32(0, b + EDU_REG_STATUS);
	irq = ioread32(b + EDU_REG_IRQ_STATUS);
	/* ~0: every bit, and with the status clear and MSI off edu lowers INTx. */
	iowrite32(~0u, b + EDU_REG_IRQ_ACK);
	edu_decode_end(edev, cmd);
	if (ms || irq || (status & EDU_STATUS_IRQFACT))
		pci_info(edev->core.pdev,
			 "edu-mig: %s: waited %d ms for a transfer, cleared irq status %#x%s\n", why,
			 ms, irq, status & EDU_STATUS_IRQFACT ? ", factorial interrupt off" : "");
	else if (!strcmp(why, "open"))
		pci_info(edev->core.pdev, "edu-mig: open: edu quiet (no transfer, no interrupt)\n");
}

/* Starts everything held while quiesced, in register order. */
static void edu_release_held(struct edu_mig_dev *edev)
{
	void __iomem *b = edev->bar0;

	edev->hold = false;
	if (edev->src_dirty)
		writeq(edev->shadow_src, b + EDU_REG_DMA_SRC);
	if (edev->dst_dirty)
		writeq(edev->shadow_dst, b + EDU_REG_DMA_DST);
	if (edev->cnt_dirty)
		writeq(edev->shadow_cnt, b + EDU_REG_DMA_CNT);
	edev->src_dirty = edev->dst_dirty = edev->cnt_dirty = false;
	if (edev->held_fact_valid)
		iowrite32(edev->held_fact, b + EDU_REG_FACT);
	edev->held_fact_valid = false;
	if (edev->held_cmd) {
		pci_info(edev->core.pdev, "edu-mig: released held DMA command %#llx\n",
			 edev->held_cmd);
		edu_log_command_begin(edev, edev->held_cmd);
		writeq(edev->held_cmd, b + EDU_REG_DMA_CMD);
		edu_log_command_end(edev);
	}
	edev->held_cmd = 0;
	if (edev->held_irq)
		iowrite32(edev->held_irq, b + EDU_REG_IRQ_RAISE);
	edev->held_irq = 0;
	if (edev->pending_irq_restore)
		iowrite32(edev->pending_irq_restore, b + EDU_REG_IRQ_RAISE);
	edev->pending_irq_restore = 0;
}

/*
 * bug=stale_fd: pds_vfio_pci's "clear the save/restore FDs on reset": VFIO_DEVICE_RESET drops
 * the driver's references to its migration files but leaves them working, so a data_fd
 * returned before the reset still reads the pre-reset stream. The correct driver disables
 * them (reads and writes fail -ENODEV, as edu_file_read/edu_file_write do).
 */
static void edu_forget_files(struct edu_mig_dev *edev)
{
	pci_info(edev->core.pdev,
		 "edu-mig: bug=stale_fd: reset leaves the migration files working (save %d, resume %d)\n",
		 !!edev->save, !!edev->resume);
	if (edev->save) {
		fput(edev->save->filp);
		edev->save = NULL;
	}
	if (edev->resume) {
		fput(edev->resume->filp);
		edev->resume = NULL;
	}
}

static void edu_reset_mig(struct edu_mig_dev *edev)
{
	edev->hold = false;
	edev->src_dirty = edev->dst_dirty = edev->cnt_dirty = false;
	edev->held_cmd = 0;
	edev->held_irq = 0;
	edev->held_fact_valid = false;
	edev->pending_irq_restore = 0;
	edev->fw_sets = 0;
	edev->async_fired = false;
	edu_disable_files(edev);
	edev->state = VFIO_DEVICE_STATE_RUNNING;
	edu_storm_start(edev);
}

static u32 edu_record_csum(const struct edu_mig_record *r)
{
	return crc32_le(~0U, (const u8 *)r, offsetof(struct edu_mig_record, csum));
}

/* Why a record cannot be restored, or NULL when it is a valid edu-mig v1 final record. */
static const char *edu_record_invalid(const struct edu_mig_record *r)
{
	if (le64_to_cpu(r->magic) != EDU_MIG_MAGIC)
		return "bad magic";
	if (le32_to_cpu(r->version) != 1)
		return "unknown version";
	if (le32_to_cpu(r->kind) != EDU_REC_FINAL)
		return "not a final record";
	if (le32_to_cpu(r->csum) != edu_record_csum(r))
		return "checksum mismatch";
	return NULL;
}

/*
 * bug=swap_addr: hisi_acc_vfio_pci "fix XQE dma address error": two DMA addresses put back in
 * each other's registers. edu_restore()'s read-back still checks out: it compares the
 * registers with what this driver wrote, not with what the source had.
 */
static void edu_restore_bugs(struct edu_mig_dev *edev, u64 *src, u64 *dst)
{
	if (edev->bug != EDU_BUG_SWAP_ADDR)
		return;
	swap(*src, *dst);
	pci_info(edev->core.pdev, "edu-mig: bug=swap_addr: restoring DMA src and dst swapped\n");
}

/*
 * RESUMING -> STOP: validates the stream written in RESUMING and restores it. vfio.h: "If the
 * user provided data is found to be incomplete, inconsistent, or otherwise invalid, the
 * migration driver must fail the SET_STATE ioctl": an empty stream, a length that is not whole
 * records, a bad magic, version, kind or checksum all fail it before any register is touched
 * (the device stays in RESUMING with its session ended; a reset brings it back). The checks
 * mirror the ones hisi_acc_vfio_pci and qat_vfio_pci added to their resume paths after
 * accepting short or foreign data. bug=accept_corrupt skips every check.
 */
static int edu_restore(struct edu_mig_dev *edev)
{
	struct edu_mig_file *f = edev->resume;
	bool lax = edu_accepts_corrupt(edev);
	struct pci_dev *pdev = edev->core.pdev;
	struct edu_mig_record r;
	void __iomem *b = edev->bar0;
	const char *bad = NULL;
	size_t off, len;
	u32 live, irqfact;
	u64 src, dst, cnt;

	if (!f)
		return -EINVAL;
	memset(&r, 0, sizeof(r));
	mutex_lock(&f->lock);
	len = f->len;
	if (len == 0) {
		bad = "no data";
	} else if (len < sizeof(r) || len % sizeof(r)) {
		bad = "length is not whole records";
	}
	/* The last complete record wins (a precopy record may come first). */
	off = len > sizeof(r) ? (len - sizeof(r)) / sizeof(r) * sizeof(r) : 0;
	memcpy(&r, f->buf + off, min(len - off, sizeof(r)));
	mutex_unlock(&f->lock);
	if (!bad)
		bad = edu_record_invalid(&r);
	if (bad && !lax) {
		/* The lab counts these lines. */
		pci_warn(pdev, "edu-mig: refused stream of %zu bytes: %s\n", len, bad);
		return -EINVAL;
	}
	if (bad) {
		pci_info(pdev, "edu-mig: bug=accept_corrupt: accepted stream of %zu bytes: %s\n", len,
			 bad);
		if (len == 0)
			return 0; /* nothing to incorporate: "restored" as it was */
	}
	live = le32_to_cpu(r.liveness);
	irqfact = le32_to_cpu(r.status_irqfact);
	src = le64_to_cpu(r.dma_src);
	dst = le64_to_cpu(r.dma_dst);
	cnt = le64_to_cpu(r.dma_cnt);
	edu_restore_bugs(edev, &src, &dst);
	/* The device is stopped: nothing runs until the next RUNNING. */
	iowrite32(~live, b + EDU_REG_LIVENESS);
	iowrite32(irqfact ? EDU_STATUS_IRQFACT : 0, b + EDU_REG_STATUS);
	iowrite32(ioread32(b + EDU_REG_IRQ_STATUS), b + EDU_REG_IRQ_ACK);
	writeq(src, b + EDU_REG_DMA_SRC);
	writeq(dst, b + EDU_REG_DMA_DST);
	writeq(cnt, b + EDU_REG_DMA_CNT);
	/* The restored state replaces whatever this device held before. */
	edev->src_dirty = edev->dst_dirty = edev->cnt_dirty = false;
	edev->held_cmd = le64_to_cpu(r.held_cmd);
	edev->held_irq = le32_to_cpu(r.held_irq);
	edev->held_fact_valid = le32_to_cpu(r.held_fact_valid);
	edev->held_fact = le32_to_cpu(r.held_fact);
	edev->pending_irq_restore = le32_to_cpu(r.irq_status);
	edev->hold = true;
	if (ioread32(b + EDU_REG_LIVENESS) == live &&
	    (ioread32(b + EDU_REG_STATUS) & EDU_STATUS_IRQFACT) == irqfact &&
	    readq(b + EDU_REG_DMA_SRC) == src && readq(b + EDU_REG_DMA_DST) == dst &&
	    readq(b + EDU_REG_DMA_CNT) == cnt)
		pci_info(pdev,
			 "edu-mig: restore verified: liveness=%#x irqfact=%u src=%#llx dst=%#llx cnt=%#llx held_cmd=%#llx irq=%#x\n",
			 live, !!irqfact, src, dst, cnt, edev->held_cmd, edev->pending_irq_restore);
	else
		pci_warn(pdev, "edu-mig: restore MISMATCH on read-back\n");
	return 0;
}

/* ---- one FSM arc ------------------------------------------------------------------------ */

static struct file *edu_save_file(struct edu_mig_dev *edev, u32 kind)
{
	struct edu_mig_file *f = edu_file_new(edev, true);
	struct edu_mig_record r;

	if (IS_ERR(f))
		return ERR_CAST(f);
	edu_snapshot(edev, &r, kind);
	memcpy(f->buf, &r, sizeof(r));
	f->len = sizeof(r);
	f->final = kind == EDU_REC_FINAL;
	get_file(f->filp);
	edev->save = f;
	return f->filp;
}

/*
 * bug=late_dma: one DMA write into the device's user memory after the RUNNING -> RUNNING_P2P
 * SET has left the kernel, before userspace sees it return: a device whose drain missed a
 * posted write. It lands in the last edu->RAM destination userspace programmed.
 *
 * When: a task_work on the SET's own thread (task_work_add(TWA_RESUME), kernel/task_work.c).
 * It runs in exit_to_user_mode_loop() -> resume_user_mode_work() (kernel/entry/common.c),
 * after syscall_exit_work() has fired the sys_exit tracepoints where a probe stamps the SET's
 * return, and before the thread is back in userspace; it sleeps late_dma_us first. So the write
 * lands after the kernel's return and before the caller can look, whatever the scheduler does:
 * exactly the gap a witness that takes its baseline after the SET returns cannot see.
 *
 * How: edu's own engine cannot be timed like this (hw/misc/edu.c runs each transfer from a
 * 100 ms timer), so the write is made with vfio_dma_rw() (drivers/vfio/vfio_main.c), the call
 * mediated and emulated devices use to DMA into the user's IOVA space. On a type1 container it
 * goes through the container's dma_rw to vfio_iommu_type1_dma_rw_chunk()
 * (drivers/vfio/vfio_iommu_type1.c), which finds the user's vfio_dma for the IOVA, takes its mm
 * (the caller's own here) and copies into the mapped pages: the memory the device's DMA
 * reaches through the IOMMU.
 */
static void edu_late_dma_twork(struct callback_head *head)
{
	struct edu_mig_dev *edev = container_of(head, struct edu_mig_dev, late_twork);
	char data[] = "edu-mig late DMA";
	u64 at;
	int ret;

	fsleep(late_dma_us);
	ret = vfio_dma_rw(&edev->core.vdev, edev->late_iova, data, sizeof(data) - 1, true);
	at = ktime_get_ns();
	/* A device write like any other: its own DMA log has it. */
	edu_log_mark(edev, edev->late_iova, sizeof(data) - 1, false);
	/* The lab reads this line: when (trace clock) and where the late write landed. */
	pci_info(edev->core.pdev,
		 "edu-mig: %s: wrote %zu bytes at iova %#llx at %llu ns, %llu us after the arc returned (ret %d)\n",
		 edev->late_what, sizeof(data) - 1, edev->late_iova, at,
		 (at - edev->late_arc_ns) / NSEC_PER_USEC, ret);
	module_put(THIS_MODULE);
}

/* Arms the late write (caller holds state_mutex; at the end of a drained P2P arc). */
static void edu_schedule_late_dma(struct edu_mig_dev *edev)
{
	int ret;

	if (!edev->to_ram_seen) {
		pci_info(edev->core.pdev, "edu-mig: %s: no edu->RAM transfer seen yet: no late write\n",
			 edev->late_what);
		return;
	}
	edev->late_iova = edev->to_ram_dst;
	edev->late_arc_ns = ktime_get_ns();
	/* The callback is this module's code: keep the module until it ran. */
	__module_get(THIS_MODULE);
	init_task_work(&edev->late_twork, edu_late_dma_twork);
	ret = task_work_add(current, &edev->late_twork, TWA_RESUME);
	if (ret) {
		module_put(THIS_MODULE);
		pci_warn(edev->core.pdev, "edu-mig: %s: task_work_add failed (%d)\n", edev->late_what,
			 ret);
	}
}

/*
 * The STOP -> STOP_COPY arc's injections. bug=fail_stopcopy: the arc fails -EIO and the device
 * stays in STOP (what QEMU's vfio_migration_set_state() then recovers from, resetting the
 * device when the recover state fails too). bug=late_flush: a cache written back after the
 * device stopped (hisi_acc_vfio_pci writes its cache back during the save, the "cache
 * write-back" fix): one DMA write into the user's memory after this arc left the kernel,
 * with the same task_work and vfio_dma_rw() as bug=late_dma.
 */
static int edu_stopcopy_bugs(struct edu_mig_dev *edev)
{
	if (edev->bug == EDU_BUG_FAIL_STOPCOPY) {
		pci_info(edev->core.pdev, "edu-mig: bug=fail_stopcopy: refusing the STOP_COPY arc\n");
		return -EIO;
	}
	if (edev->bug == EDU_BUG_LATE_FLUSH) {
		edev->late_what = "bug=late_flush (STOP -> STOP_COPY)";
		edu_schedule_late_dma(edev);
	}
	return 0;
}

/*
 * bug=fw_crash: the device's firmware dies after fw_crash_after SETs (pds_vfio_pci's firmware
 * recovery: every command fails until the host resets the device): from then every SET fails
 * -EIO and the device reports ERROR until VFIO_DEVICE_RESET (edu_reset_mig() clears it).
 * Returns true when this SET must fail. Caller holds state_mutex.
 */
static bool edu_fw_crashed(struct edu_mig_dev *edev)
{
	if (edev->bug != EDU_BUG_FW_CRASH)
		return false;
	if (edev->state == VFIO_DEVICE_STATE_ERROR)
		return true;
	if (++edev->fw_sets <= fw_crash_after)
		return false;
	pci_info(edev->core.pdev, "edu-mig: bug=fw_crash: firmware crashed at SET %u: ERROR\n",
		 edev->fw_sets);
	edu_disable_files(edev);
	edev->state = VFIO_DEVICE_STATE_ERROR;
	return true;
}

static int edu_quiesce(struct edu_mig_dev *edev)
{
	int ret;

	if (edev->bug == EDU_BUG_FAIL_P2P) {
		pci_info(edev->core.pdev, "edu-mig: bug=fail_p2p: refusing the P2P arc\n");
		return -EIO;
	}
	edu_storm_stop(edev);
	if (edev->bug == EDU_BUG_EARLY_P2P) {
		pci_info(edev->core.pdev, "edu-mig: bug=early_p2p: not waiting for DMA (%s)\n",
			 readq(edev->bar0 + EDU_REG_DMA_CMD) & EDU_DMA_RUN ?
				 "a transfer is in flight" : "none in flight");
		return 0;
	}
	edev->hold = true;
	ret = edu_drain_dma(edev);
	if (ret)
		edev->hold = false;
	return ret;
}

static struct file *edu_step(struct edu_mig_dev *edev, enum vfio_device_mig_state next)
{
	enum vfio_device_mig_state cur = edev->state;
	int ret;

	if (dma_allowed(cur) && !dma_allowed(next)) {
		ret = edu_quiesce(edev);
		if (ret)
			return ERR_PTR(ret);
		if (cur == VFIO_DEVICE_STATE_RUNNING && next == VFIO_DEVICE_STATE_RUNNING_P2P &&
		    edev->bug == EDU_BUG_LATE_DMA) {
			edev->late_what = "bug=late_dma (RUNNING -> RUNNING_P2P)";
			edu_schedule_late_dma(edev);
		}
	}
	if (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_STOP &&
	    edev->bug == EDU_BUG_IRQ_IN_STOP) {
		unsigned int handled = edu_irqs_handled(edev->core.pdev);

		/* Entering STOP (then done): the interrupt below fires while stopped. */
		edev->state = next;
		iowrite32(0x1, edev->bar0 + EDU_REG_IRQ_RAISE);
		pci_info(edev->core.pdev,
			 "edu-mig: bug=irq_in_stop: raised an interrupt in STOP (irq status %#x, msi %d)\n",
			 ioread32(edev->bar0 + EDU_REG_IRQ_STATUS), edev->core.pdev->msi_enabled);
		/* Let the interrupt reach its handler while the device is stopped. */
		if (edev->core.pdev->msi_enabled) {
			edu_wait_irq_handled(edev, handled);
			synchronize_irq(pci_irq_vector(edev->core.pdev, 0));
		} else {
			msleep(EDU_IRQ_SETTLE_MS);
		}
		if (edev->storm_task)
			edu_storm_in_stop(edev);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_STOP &&
	    edev->bug == EDU_BUG_SLOW_ARC) {
		/*
		 * bug=slow_arc: the arc where a real driver waits on its device (mlx5_vfio_pci's
		 * RUNNING_P2P -> STOP suspends the function with a firmware command and its
		 * timeout) stalls under state_mutex, as a SET blocked on a deadlocked mutex or a
		 * hung command would: every GET waits behind it. msleep: the task sleeps, no RCU
		 * stall; slow_arc_ms stays far below the hung-task timeout.
		 */
		pci_info(edev->core.pdev, "edu-mig: bug=slow_arc: RUNNING_P2P -> STOP stalls %u ms\n",
			 slow_arc_ms);
		msleep(slow_arc_ms);
		pci_info(edev->core.pdev, "edu-mig: bug=slow_arc: stall over\n");
	}
	if (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_STOP_COPY) {
		ret = edu_stopcopy_bugs(edev);
		if (ret)
			return ERR_PTR(ret);
		return edu_save_file(edev, EDU_REC_FINAL);
	}
	if (cur == VFIO_DEVICE_STATE_STOP_COPY && next == VFIO_DEVICE_STATE_STOP) {
		edu_disable_files(edev);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_RESUMING) {
		struct edu_mig_file *f = edu_file_new(edev, false);

		if (IS_ERR(f))
			return ERR_CAST(f);
		get_file(f->filp);
		edev->resume = f;
		return f->filp;
	}
	if (cur == VFIO_DEVICE_STATE_RESUMING && next == VFIO_DEVICE_STATE_STOP) {
		ret = edu_restore(edev);
		edu_disable_files(edev);
		if (ret)
			return ERR_PTR(ret);
		return NULL;
	}
#ifdef EDU_HAVE_PRECOPY
	if ((cur == VFIO_DEVICE_STATE_RUNNING && next == VFIO_DEVICE_STATE_PRE_COPY) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_PRE_COPY_P2P))
		return edu_save_file(edev, EDU_REC_PRECOPY);
	if ((cur == VFIO_DEVICE_STATE_PRE_COPY && next == VFIO_DEVICE_STATE_RUNNING) ||
	    (cur == VFIO_DEVICE_STATE_PRE_COPY_P2P && next == VFIO_DEVICE_STATE_RUNNING_P2P)) {
		edu_disable_files(edev);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_PRE_COPY_P2P && next == VFIO_DEVICE_STATE_STOP_COPY) {
		struct edu_mig_file *f = edev->save;
		struct edu_mig_record r;

		if (!f)
			return ERR_PTR(-EINVAL);
		edu_snapshot(edev, &r, EDU_REC_FINAL);
		mutex_lock(&f->lock);
		if (f->len + sizeof(r) <= sizeof(f->buf)) {
			memcpy(f->buf + f->len, &r, sizeof(r));
			f->len += sizeof(r);
		}
		f->final = true;
		mutex_unlock(&f->lock);
		return NULL; /* the PRE_COPY data fd carries on */
	}
	if ((cur == VFIO_DEVICE_STATE_PRE_COPY && next == VFIO_DEVICE_STATE_PRE_COPY_P2P) ||
	    (cur == VFIO_DEVICE_STATE_PRE_COPY_P2P && next == VFIO_DEVICE_STATE_PRE_COPY))
		goto done;
#endif
	if ((cur == VFIO_DEVICE_STATE_RUNNING && next == VFIO_DEVICE_STATE_RUNNING_P2P) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_STOP) ||
	    (cur == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_RUNNING_P2P) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING_P2P && next == VFIO_DEVICE_STATE_RUNNING))
		goto done;
	return ERR_PTR(-EINVAL);
done:
	return NULL; /* edu_arc() releases held work when the device runs again */
}

/* Runs one arc and commits the new state (arcs that returned early committed already). */
static struct file *edu_arc(struct edu_mig_dev *edev, enum vfio_device_mig_state next)
{
	struct file *res = edu_step(edev, next);

	if (!IS_ERR(res)) {
		if (!dma_allowed(edev->state) && dma_allowed(next)) {
			edu_release_held(edev);
			edu_storm_start(edev);
		}
		edev->state = next;
	}
	return res;
}

static struct file *edu_set_state(struct vfio_device *vdev, enum vfio_device_mig_state new)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	enum vfio_device_mig_state next;
	struct file *res = NULL;
	int ret;
	u16 cmd;

	mutex_lock(&edev->state_mutex);
	cmd = edu_decode_begin(edev);
	edev->bug = current_bug();
	if (edu_fw_crashed(edev))
		res = ERR_PTR(-EIO);
	while (!IS_ERR(res) && edev->state != new) {
		ret = vfio_mig_get_next_state(vdev, edev->state, new, &next);
		if (ret) {
			res = ERR_PTR(ret);
			break;
		}
		if (edev->bug == EDU_BUG_NO_STEPS && next != new) {
			/* Skip the kernel's path: run every arc internally without asking it. */
			enum vfio_device_mig_state want = new;

			pci_info(edev->core.pdev, "edu-mig: bug=no_steps: jumping %u -> %u\n",
				 edev->state, new);
			res = edu_arc(edev, next);
			while (!IS_ERR(res) && !res && edev->state != want) {
				/* Candidate order of the kernel table, computed privately. */
				enum vfio_device_mig_state n2 = want;

				if (dma_allowed(edev->state) && !dma_allowed(want) &&
				    edev->state == VFIO_DEVICE_STATE_RUNNING)
					n2 = VFIO_DEVICE_STATE_RUNNING_P2P;
				else if (edev->state == VFIO_DEVICE_STATE_RUNNING_P2P &&
					 want != VFIO_DEVICE_STATE_RUNNING)
					n2 = VFIO_DEVICE_STATE_STOP;
				else if (edev->state == VFIO_DEVICE_STATE_STOP &&
					 dma_allowed(want))
					n2 = VFIO_DEVICE_STATE_RUNNING_P2P;
				else if ((edev->state == VFIO_DEVICE_STATE_STOP_COPY ||
					  edev->state == VFIO_DEVICE_STATE_RESUMING) &&
					 want != VFIO_DEVICE_STATE_STOP)
					n2 = VFIO_DEVICE_STATE_STOP;
				res = edu_arc(edev, n2);
			}
			break;
		}
		res = edu_arc(edev, next);
		if (IS_ERR(res))
			break;
		if (res && edev->state != new) {
			/* A data fd only comes back from the final arc. */
			fput(res);
			res = ERR_PTR(-EINVAL);
			break;
		}
	}
	edu_decode_end(edev, cmd);
	mutex_unlock(&edev->state_mutex);
	return res;
}

static int edu_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *cur)
{
	struct edu_mig_dev *edev = to_edev(vdev);

	mutex_lock(&edev->state_mutex);
	*cur = edev->state;
	mutex_unlock(&edev->state_mutex);
	return 0;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
/*
 * bug=size_lie: VFIO_DEVICE_FEATURE_MIG_DATA_SIZE answers half of what STOP_COPY will save
 * (the estimate QEMU sizes its downtime on, "vfio/migration: Add VFIO migration pre-copy
 * support"'s stop-copy size, 3b5948f808e3).
 */
static void edu_size_bugs(struct edu_mig_dev *edev, unsigned long *len)
{
	if (current_bug() == EDU_BUG_SIZE_LIE) {
		*len /= 2;
		pci_info(edev->core.pdev, "edu-mig: bug=size_lie: estimating %lu bytes\n", *len);
	}
}

static int edu_get_data_size(struct vfio_device *vdev, unsigned long *len)
{
	struct edu_mig_dev *edev = to_edev(vdev);

	*len = sizeof(struct edu_mig_record);
	edu_size_bugs(edev, len);
	return 0;
}
#endif

static const struct vfio_migration_ops edu_mig_ops = {
	.migration_set_state = edu_set_state,
	.migration_get_state = edu_get_state,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	.migration_get_data_size = edu_get_data_size,
#endif
};

/* ---- BAR0 access through the device fd ------------------------------------------------- */

static bool edu_is_bar0(loff_t pos)
{
	return VFIO_PCI_OFFSET_TO_INDEX(pos) == VFIO_PCI_BAR0_REGION_INDEX;
}

/* Returns true when the write was held (the device is quiesced). Caller holds state_mutex. */
static bool edu_hold_write(struct edu_mig_dev *edev, u64 off, u64 val, size_t count)
{
	if (!edev->hold)
		return false;
	switch (off) {
	case EDU_REG_DMA_SRC:
		edev->shadow_src = val;
		edev->src_dirty = true;
		return true;
	case EDU_REG_DMA_DST:
		edev->shadow_dst = val;
		edev->dst_dirty = true;
		return true;
	case EDU_REG_DMA_CNT:
		edev->shadow_cnt = val;
		edev->cnt_dirty = true;
		return true;
	case EDU_REG_DMA_CMD:
		if (val & EDU_DMA_RUN)
			edev->held_cmd = val;
		return true;
	case EDU_REG_IRQ_RAISE:
		edev->held_irq |= val;
		return true;
	case EDU_REG_FACT:
		edev->held_fact = val;
		edev->held_fact_valid = true;
		return true;
	default:
		return false;
	}
}

/*
 * bug=async_state: the migration state changes without a SET (a reset_done handler run behind
 * the VMM's back, libvfio-user issue #853): the first DMA command written while quiesced
 * (held) drops the device to RUNNING, ends its data sessions and starts the held work, once
 * per open or reset. Caller holds state_mutex.
 */
static void edu_async_bugs(struct edu_mig_dev *edev)
{
	if (current_bug() != EDU_BUG_ASYNC_STATE || edev->async_fired)
		return;
	edev->async_fired = true;
	pci_info(edev->core.pdev,
		 "edu-mig: bug=async_state: DMA command written in state %u: RUNNING without a SET\n",
		 edev->state);
	edu_disable_files(edev);
	edev->state = VFIO_DEVICE_STATE_RUNNING;
	edu_release_held(edev);
	edu_storm_start(edev);
}

static ssize_t edu_write(struct vfio_device *vdev, const char __user *buf, size_t count,
			 loff_t *ppos)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	u64 off = *ppos & VFIO_PCI_OFFSET_MASK;
	u64 val = 0;
	ssize_t ret;

	if (!edu_is_bar0(*ppos) || (count != 4 && count != 8) || off % count)
		return vfio_pci_core_write(vdev, buf, count, ppos);
	if (copy_from_user(&val, buf, count))
		return -EFAULT;
	mutex_lock(&edev->state_mutex);
	if (off == EDU_REG_DMA_DST)
		edev->user_dst = le64_to_cpu(val);
	if (off == EDU_REG_DMA_CMD && (le64_to_cpu(val) & (EDU_DMA_RUN | EDU_DMA_TO_RAM)) ==
					      (EDU_DMA_RUN | EDU_DMA_TO_RAM)) {
		edev->to_ram_dst = edev->user_dst;
		edev->to_ram_seen = true;
	}
	if (edu_hold_write(edev, off, le64_to_cpu(val), count)) {
		*ppos += count;
		ret = count;
		if (off == EDU_REG_DMA_CMD && edev->held_cmd)
			edu_async_bugs(edev);
	} else {
		bool cmd = off == EDU_REG_DMA_CMD;

		if (cmd)
			edu_log_command_begin(edev, le64_to_cpu(val));
		ret = vfio_pci_core_write(vdev, buf, count, ppos);
		if (cmd)
			edu_log_command_end(edev);
	}
	mutex_unlock(&edev->state_mutex);
	return ret;
}

/*
 * A held write reads back as written, as it would on a device that took it: the DMA registers
 * return their held value and a held command reads as pending (it has not been done). What
 * BAR0 shows is then the state the driver saves, so a tool comparing BAR0 before and after a
 * migration compares what was migrated.
 */
static bool edu_held_value(struct edu_mig_dev *edev, u64 off, u64 *v)
{
	switch (off) {
	case EDU_REG_DMA_SRC:
		*v = edev->shadow_src;
		return edev->src_dirty;
	case EDU_REG_DMA_DST:
		*v = edev->shadow_dst;
		return edev->dst_dirty;
	case EDU_REG_DMA_CNT:
		*v = edev->shadow_cnt;
		return edev->cnt_dirty;
	case EDU_REG_DMA_CMD:
		*v = edev->held_cmd;
		return edev->held_cmd != 0;
	default:
		return false;
	}
}

static ssize_t edu_read(struct vfio_device *vdev, char __user *buf, size_t count, loff_t *ppos)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	u64 off = *ppos & VFIO_PCI_OFFSET_MASK;
	u64 v = 0;
	bool held;

	if (edu_is_bar0(*ppos) && (count == 4 || count == 8) && off >= EDU_REG_DMA_SRC &&
	    off <= EDU_REG_DMA_CMD && !(off % 8)) {
		mutex_lock(&edev->state_mutex);
		held = edu_held_value(edev, off, &v);
		mutex_unlock(&edev->state_mutex);
		if (held) {
			v = cpu_to_le64(v);
			if (copy_to_user(buf, &v, count))
				return -EFAULT;
			*ppos += count;
			return count;
		}
	}
	return vfio_pci_core_read(vdev, buf, count, ppos);
}

static long edu_ioctl(struct vfio_device *vdev, unsigned int cmd, unsigned long arg)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	long ret;

	if (cmd != VFIO_DEVICE_RESET)
		return vfio_pci_core_ioctl(vdev, cmd, arg);
	/* edu has no function reset: the driver resets its migration state and registers. */
	ret = vfio_pci_core_ioctl(vdev, cmd, arg);
	mutex_lock(&edev->state_mutex);
	if (edev->bar0)
		edu_quiet(edev, "reset");
	switch (current_bug()) {
	case EDU_BUG_LOST_RESET:
		/*
		 * The deferred reset of hisi_acc_vfio_pci / mlx5_vfio_pci (their reset_done handler
		 * only flags it when state_mutex is busy; the unlock path runs it) lost: the
		 * migration state, its held work and its files stay as they were.
		 */
		pci_info(edev->core.pdev,
			 "edu-mig: bug=lost_reset: reset left the migration state at %u\n",
			 edev->state);
		break;
	case EDU_BUG_STALE_FD:
		edu_forget_files(edev);
		edu_reset_mig(edev);
		break;
	default:
		edu_reset_mig(edev);
	}
	mutex_unlock(&edev->state_mutex);
	if (ret == -EINVAL && !edev->core.reset_works)
		ret = 0;
	return ret;
}

/* ---- vfio device life cycle ------------------------------------------------------------ */

static int edu_open_device(struct vfio_device *vdev)
{
	struct edu_mig_dev *edev = to_edev(vdev);
	int ret;

	ret = vfio_pci_core_enable(&edev->core);
	if (ret)
		return ret;
	edev->bar0 = pci_iomap(edev->core.pdev, 0, 0);
	if (!edev->bar0) {
		vfio_pci_core_disable(&edev->core);
		return -ENOMEM;
	}
	mutex_lock(&edev->state_mutex);
	edu_quiet(edev, "open");
	edu_reset_mig(edev);
	edev->to_ram_seen = false;
	mutex_unlock(&edev->state_mutex);
	vfio_pci_core_finish_enable(&edev->core);
	/*
	 * BAR0 only through the device fd, so DMA starts can be held while quiesced (after
	 * finish_enable, which probes which BARs can be mmapped).
	 */
	edev->core.bar_mmap_supported[0] = false;
	if (READ_ONCE(storm)) {
		struct task_struct *t = kthread_create(edu_storm_fn, edev, "edu-storm/%s",
						       pci_name(edev->core.pdev));

		if (IS_ERR(t)) {
			pci_warn(edev->core.pdev, "edu-mig: storm thread not started (%ld)\n",
				 PTR_ERR(t));
		} else {
			mutex_lock(&edev->state_mutex);
			edev->storm_task = t;
			WRITE_ONCE(edev->storm_on, false);
			edev->storm_raised = 0;
			if (dma_allowed(edev->state))
				edu_storm_start(edev);
			mutex_unlock(&edev->state_mutex);
			wake_up_process(t);
			pci_info(edev->core.pdev, "edu-mig: storm=%u: storm thread started\n", storm);
		}
	}
	return 0;
}

static void edu_close_device(struct vfio_device *vdev)
{
	struct edu_mig_dev *edev = to_edev(vdev);

	/* The storm ends before BAR0 is unmapped and MSI torn down (no lock held: it takes none). */
	if (edev->storm_task) {
		kthread_stop(edev->storm_task);
		pci_info(edev->core.pdev, "edu-mig: storm thread stopped: %llu interrupts raised\n",
			 edev->storm_raised);
		edev->storm_task = NULL;
		WRITE_ONCE(edev->storm_on, false);
	}
	mutex_lock(&edev->state_mutex);
	/* Before vfio_pci_core_close_device: the user's DMA mappings are still in place. */
	if (edev->bar0)
		edu_quiet(edev, "close");
	edu_reset_mig(edev);
	/* The core does not stop DMA logging at close (vfio_device_last_close): this does. */
	mutex_lock(&edev->log_lock);
	edu_log_free(edev);
	mutex_unlock(&edev->log_lock);
	if (edev->bar0)
		pci_iounmap(edev->core.pdev, edev->bar0);
	edev->bar0 = NULL;
	mutex_unlock(&edev->state_mutex);
	vfio_pci_core_close_device(vdev);
}

static int edu_init_dev(struct vfio_device *vdev)
{
	struct edu_mig_dev *edev = to_edev(vdev);

	mutex_init(&edev->state_mutex);
	mutex_init(&edev->log_lock);
	init_waitqueue_head(&edev->storm_wq);
	vdev->migration_flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P;
#ifdef EDU_HAVE_PRECOPY
	if (precopy)
		vdev->migration_flags |= VFIO_MIGRATION_PRE_COPY;
#endif
	vdev->mig_ops = &edu_mig_ops;
#ifdef EDU_HAVE_DMA_LOGGING
	/* A static property of the device, set before it is registered (include/linux/vfio.h). */
	if (dma_log)
		vdev->log_ops = &edu_log_ops;
#endif
	edev->state = VFIO_DEVICE_STATE_RUNNING;
	return vfio_pci_core_init_dev(vdev);
}

static void edu_release_dev(struct vfio_device *vdev)
{
	struct edu_mig_dev *edev = to_edev(vdev);

	mutex_destroy(&edev->log_lock);
	mutex_destroy(&edev->state_mutex);
	vfio_pci_core_release_dev(vdev);
}

static const struct vfio_device_ops edu_mig_dev_ops = {
	.name = "edu-mig",
	.init = edu_init_dev,
	.release = edu_release_dev,
	.open_device = edu_open_device,
	.close_device = edu_close_device,
	.ioctl = edu_ioctl,
	.device_feature = vfio_pci_core_ioctl_feature,
	.read = edu_read,
	.write = edu_write,
	.mmap = vfio_pci_core_mmap,
	.request = vfio_pci_core_request,
	.match = vfio_pci_core_match,
};

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct edu_mig_dev *edev;
	int ret;

	edev = vfio_alloc_device(edu_mig_dev, core.vdev, &pdev->dev, &edu_mig_dev_ops);
	if (IS_ERR(edev))
		return PTR_ERR(edev);
	dev_set_drvdata(&pdev->dev, &edev->core);
	ret = vfio_pci_core_register_device(&edev->core);
	if (ret) {
		vfio_put_device(&edev->core.vdev);
		return ret;
	}
	/* The lab reads this line: " dma_log" when DMA logging is offered. */
	pci_info(pdev, "edu-mig: migration flags %#llx%s%s%s\n",
		 (unsigned long long)edev->core.vdev.migration_flags,
		 edev->core.vdev.log_ops ? " dma_log" : "", bug[0] ? " bug=" : "", bug);
	if (dma_log && !edev->core.vdev.log_ops)
		pci_info(pdev,
			 "edu-mig: dma_log=1 not offered: this kernel has no iova_bitmap helpers (6.7+ without CONFIG_IOMMUFD_DRIVER)\n");
	return 0;
}

static void edu_remove(struct pci_dev *pdev)
{
	struct vfio_pci_core_device *core = dev_get_drvdata(&pdev->dev);

	vfio_pci_core_unregister_device(core);
	vfio_put_device(&core->vdev);
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DRIVER_OVERRIDE_DEVICE_VFIO(EDU_VENDOR, EDU_DEVICE) },
	{}
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_mig_driver = {
	.name = KBUILD_MODNAME,
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
	.err_handler = &vfio_pci_core_err_handlers,
	.driver_managed_dma = true,
};

module_pci_driver(edu_mig_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vfio-pci variant driver giving QEMU's edu device live migration (migscope lab)");
