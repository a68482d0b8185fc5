// SPDX-License-Identifier: GPL-2.0-only
/*
 * edu-selftest: a guest-side self-test of the edu-mig variant driver through the VFIO uAPI
 * (type1 container). It is not migscope's controller: it checks the driver's own promises
 * (BAR0 not mmappable, DMA drained on RUNNING -> RUNNING_P2P, DMA starts held while quiesced
 * and released on RUNNING, STOP_COPY/RESUMING stream) and prints one line per check.
 * Usage: edu-selftest [--run-ms MS] BDF
 * --run-ms keeps the device RUNNING for MS ms once MSI and the DMA map are set up (after a GET
 * of its state: RUNNING), before the first transfer (edu-mig's storm=N raises its interrupts then), and prints how many reached
 * the eventfd.
 *
 * A second mode stands in for a VMM that already holds its devices when a tracer attaches
 * (`migscope record --pid`): it opens every BDF (one container), sets up bus mastering, a DMA
 * map and MSI, queries the migration flags, optionally walks to STOP_COPY, writes FILE_READY
 * and waits for FILE_GO; then it migrates in QEMU's order (every device to RUNNING_P2P before
 * any stops, every device back to RUNNING_P2P before any runs).
 * Usage: edu-selftest migrate [--pause-at STOP_COPY] --ready FILE_READY --go FILE_GO BDF...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int failures;
static int dev;
static uint64_t bar0;

#define CHECK(cond, ...)                                                                     \
	do {                                                                                 \
		int ok_ = (cond);                                                            \
		printf("%s: ", ok_ ? "ok" : "FAIL");                                         \
		printf(__VA_ARGS__);                                                         \
		printf("\n");                                                                \
		if (!ok_)                                                                    \
			failures++;                                                          \
	} while (0)

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void wr64(uint64_t off, uint64_t v)
{
	if (pwrite(dev, &v, 8, bar0 + off) != 8)
		printf("FAIL: pwrite 0x%llx: %s\n", (unsigned long long)off, strerror(errno)), failures++;
}

static uint64_t rd64(uint64_t off)
{
	uint64_t v = 0;

	if (pread(dev, &v, 8, bar0 + off) != 8)
		printf("FAIL: pread 0x%llx: %s\n", (unsigned long long)off, strerror(errno)), failures++;
	return v;
}

static uint32_t rd32(uint64_t off)
{
	uint32_t v = 0;

	if (pread(dev, &v, 4, bar0 + off) != 4)
		printf("FAIL: pread 0x%llx: %s\n", (unsigned long long)off, strerror(errno)), failures++;
	return v;
}

/* Sets PCI_COMMAND_MASTER through the config region: edu's DMA is dropped without it. */
static int enable_bus_master(void)
{
	struct vfio_region_info cfg = { .argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	uint16_t cmd;

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg) || pread(dev, &cmd, 2, cfg.offset + 4) != 2)
		return -1;
	cmd |= 0x4;
	return pwrite(dev, &cmd, 2, cfg.offset + 4) == 2 ? 0 : -1;
}

/* Routes edu's MSI to an eventfd (VFIO_DEVICE_SET_IRQS), so its interrupts reach the host. */
static int enable_msi(void)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq = (void *)buf;
	int efd = eventfd(0, EFD_NONBLOCK);

	if (efd < 0)
		return -1;
	irq->argsz = sizeof(buf);
	irq->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	irq->index = VFIO_PCI_MSI_IRQ_INDEX;
	irq->start = 0;
	irq->count = 1;
	memcpy(irq->data, &efd, sizeof(int));
	if (ioctl(dev, VFIO_DEVICE_SET_IRQS, buf))
		return -1;
	return efd;
}

static int set_state(uint32_t state, int *data_fd)
{
	char buf[sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_mig_state)];
	struct vfio_device_feature *f = (void *)buf;
	struct vfio_device_feature_mig_state *m = (void *)f->data;

	memset(buf, 0, sizeof(buf));
	f->argsz = sizeof(buf);
	f->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
	m->device_state = state;
	m->data_fd = -1;
	if (ioctl(dev, VFIO_DEVICE_FEATURE, buf))
		return -errno;
	if (data_fd)
		*data_fd = m->data_fd;
	else if (m->data_fd >= 0)
		close(m->data_fd);
	return 0;
}

static int get_state(void)
{
	char buf[sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_mig_state)];
	struct vfio_device_feature *f = (void *)buf;
	struct vfio_device_feature_mig_state *m = (void *)f->data;

	memset(buf, 0, sizeof(buf));
	f->argsz = sizeof(buf);
	f->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
	if (ioctl(dev, VFIO_DEVICE_FEATURE, buf))
		return -errno;
	return m->device_state;
}

static void set_and_get(uint32_t state, int *fd)
{
	double t0 = now_ms();
	int r = set_state(state, fd);
	double t1 = now_ms();

	CHECK(r == 0, "SET %u returned %d after %.1f ms", state, r, t1 - t0);
	CHECK(get_state() == (int)state, "GET reports %d (want %u)", get_state(), state);
}

/* Opens the group of `bdf` in `container` (setting the IOMMU on the first) and its device. */
static int open_device(int container, const char *bdf, int first)
{
	char path[256], link[256];
	ssize_t n;
	int group, fd;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return perror(path), -1;
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", basename(link));
	group = open(path, O_RDWR);
	if (group < 0)
		return perror(path), -1;
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		return perror("VFIO_GROUP_SET_CONTAINER"), -1;
	if (first && ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		return perror("VFIO_SET_IOMMU"), -1;
	fd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (fd < 0)
		perror("VFIO_GROUP_GET_DEVICE_FD");
	return fd;
}

#define MAX_DEVS 4

/* Every device of `devs` to `state`, one after the other; data fds kept in `data`. */
static void set_all(int *devs, int ndev, uint32_t state, int *data)
{
	for (int i = 0; i < ndev; i++) {
		dev = devs[i];
		set_and_get(state, data ? &data[i] : NULL);
	}
}

static int migrate_main(int argc, char **argv)
{
	const char *ready = NULL, *go = NULL, *pause_at = NULL;
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	char fbuf[sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_migration)];
	struct vfio_device_feature *feat = (void *)fbuf;
	int devs[MAX_DEVS], data[MAX_DEVS], ndev = 0, container, i, waited;
	const char *names[MAX_DEVS];
	uint8_t *mem, buf[512];
	FILE *f;

	for (i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--ready") && i + 1 < argc)
			ready = argv[++i];
		else if (!strcmp(argv[i], "--go") && i + 1 < argc)
			go = argv[++i];
		else if (!strcmp(argv[i], "--pause-at") && i + 1 < argc)
			pause_at = argv[++i];
		else if (ndev < MAX_DEVS)
			names[ndev++] = argv[i];
		else
			return fprintf(stderr, "at most %d devices\n", MAX_DEVS), 2;
	}
	if (!ready || !go || !ndev || (pause_at && strcmp(pause_at, "STOP_COPY")))
		return fprintf(stderr, "usage: %s migrate [--pause-at STOP_COPY] --ready FILE "
				       "--go FILE BDF...\n", argv[0]), 2;
	container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		return perror("/dev/vfio/vfio"), 2;
	mem = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(mem, 0xaa, 1 << 16);
	for (i = 0; i < ndev; i++) {
		const char *bdf = names[i];
		struct vfio_region_info reg = { .argsz = sizeof(reg),
						.index = VFIO_PCI_BAR0_REGION_INDEX };

		devs[i] = open_device(container, bdf, i == 0);
		if (devs[i] < 0)
			return 2;
		dev = devs[i];
		data[i] = -1;
		memset(fbuf, 0, sizeof(fbuf));
		feat->argsz = sizeof(fbuf);
		feat->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION;
		CHECK(ioctl(dev, VFIO_DEVICE_FEATURE, fbuf) == 0, "%s: migration flags 0x%llx", bdf,
		      (unsigned long long)((struct vfio_device_feature_migration *)feat->data)->flags);
		CHECK(enable_bus_master() == 0, "%s: bus master enabled", bdf);
		CHECK(enable_msi() >= 0, "%s: MSI routed to an eventfd", bdf);
		CHECK(ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &reg) == 0, "%s: BAR0 region info", bdf);
		bar0 = reg.offset;
		CHECK(rd32(0) == 0x010000ed, "%s: edu id 0x%x", bdf, rd32(0));
	}
	map.vaddr = (uintptr_t)mem;
	map.iova = 0x100000;
	map.size = 1 << 16;
	map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0, "map 64 KiB at iova 0x100000");
	if (pause_at) {
		/* Stopped and saving when the tracer attaches: the middle of a migration. */
		set_all(devs, ndev, VFIO_DEVICE_STATE_RUNNING_P2P, NULL);
		set_all(devs, ndev, VFIO_DEVICE_STATE_STOP, NULL);
		set_all(devs, ndev, VFIO_DEVICE_STATE_STOP_COPY, data);
	}
	f = fopen(ready, "w");
	if (!f)
		return perror(ready), 2;
	fprintf(f, "%d\n", getpid());
	fclose(f);
	for (waited = 0; access(go, F_OK); waited++) {
		if (waited > 6000)
			return fprintf(stderr, "%s never appeared\n", go), 2;
		usleep(10000);
	}
	if (!pause_at) {
		set_all(devs, ndev, VFIO_DEVICE_STATE_RUNNING_P2P, NULL);
		set_all(devs, ndev, VFIO_DEVICE_STATE_STOP, NULL);
		set_all(devs, ndev, VFIO_DEVICE_STATE_STOP_COPY, data);
	}
	for (i = 0; i < ndev; i++) {
		ssize_t n, saved = 0;

		while (data[i] >= 0 && (n = read(data[i], buf, sizeof(buf))) > 0)
			saved += n;
		CHECK(saved > 0, "%s: saved %zd bytes", names[i], saved);
		if (data[i] >= 0)
			close(data[i]);
	}
	set_all(devs, ndev, VFIO_DEVICE_STATE_STOP, NULL);
	set_all(devs, ndev, VFIO_DEVICE_STATE_RUNNING_P2P, NULL);
	set_all(devs, ndev, VFIO_DEVICE_STATE_RUNNING, NULL);
	printf("MIGRATE %s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}

/*
 * syscost [empty-bpf] [N]: the cost of unrelated syscalls (ioctl on /dev/null, a 1-byte
 * read of /dev/zero, a 1-byte write to /dev/null), ns per call, best of 5 rounds of N.
 * empty-bpf first attaches one empty BPF program (r0 = 0; exit) to
 * syscalls:sys_enter_ioctl: the floor any syscall-tracepoint hook pays. Prints one line:
 * SYSCOST ioctl_ns=.. read_ns=.. write_ns=..
 */
static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int empty_bpf_on_sys_enter_ioctl(void)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;
	struct perf_event_attr pa;
	char buf[32] = { 0 };
	int prog, pfd, id, fd;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_TRACEPOINT;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = 2;
	a.license = (uintptr_t) "GPL";
	prog = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (prog < 0)
		return perror("BPF_PROG_LOAD"), -1;
	fd = open("/sys/kernel/tracing/events/syscalls/sys_enter_ioctl/id", O_RDONLY);
	if (fd < 0)
		fd = open("/sys/kernel/debug/tracing/events/syscalls/sys_enter_ioctl/id", O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0)
		return perror("sys_enter_ioctl/id"), -1;
	close(fd);
	id = atoi(buf);
	memset(&pa, 0, sizeof(pa));
	pa.type = PERF_TYPE_TRACEPOINT;
	pa.size = sizeof(pa);
	pa.config = id;
	pa.sample_period = 1;
	pa.wakeup_events = 1;
	pfd = syscall(SYS_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0)
		return perror("perf_event_open"), -1;
	if (ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog) || ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0))
		return perror("PERF_EVENT_IOC_SET_BPF"), -1;
	return 0;
}

static int syscost_main(int argc, char **argv)
{
	int i, r, n = 200000, null_fd, zero_fd, arg;
	int empty = argc > 2 && !strcmp(argv[2], "empty-bpf");
	double best[3] = { 1e18, 1e18, 1e18 }, t;
	char c = 0;

	if (argc > 2 + empty)
		n = atoi(argv[2 + empty]);
	if (empty && empty_bpf_on_sys_enter_ioctl())
		return 2;
	null_fd = open("/dev/null", O_RDWR);
	zero_fd = open("/dev/zero", O_RDONLY);
	if (null_fd < 0 || zero_fd < 0)
		return perror("open /dev/null"), 2;
	for (r = 0; r < 5; r++) {
		t = now_ns();
		for (i = 0; i < n; i++)
			(void)!ioctl(null_fd, FIONREAD, &arg);
		t = (now_ns() - t) / n;
		best[0] = t < best[0] ? t : best[0];
		t = now_ns();
		for (i = 0; i < n; i++)
			(void)!read(zero_fd, &c, 1);
		t = (now_ns() - t) / n;
		best[1] = t < best[1] ? t : best[1];
		t = now_ns();
		for (i = 0; i < n; i++)
			(void)!write(null_fd, &c, 1);
		t = (now_ns() - t) / n;
		best[2] = t < best[2] ? t : best[2];
	}
	printf("SYSCOST ioctl_ns=%.0f read_ns=%.0f write_ns=%.0f\n", best[0], best[1], best[2]);
	return 0;
}

int main(int argc, char **argv)
{
	char path[256], link[256];
	struct vfio_region_info reg = { .argsz = sizeof(reg), .index = VFIO_PCI_BAR0_REGION_INDEX };
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	char fbuf[sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_migration)];
	struct vfio_device_feature *feat = (void *)fbuf;
	uint8_t save[512];
	ssize_t n, saved = 0;
	int container, group, fd, efd;
	uint64_t irqs = 0;
	uint8_t *mem;
	double t0;
	long run_ms = 0;
	const char *bdf;

	if (argc > 1 && !strcmp(argv[1], "migrate"))
		return migrate_main(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "syscost"))
		return syscost_main(argc, argv);
	if (argc == 4 && !strcmp(argv[1], "--run-ms")) {
		char *end;

		run_ms = strtol(argv[2], &end, 10);
		if (*end || run_ms < 0)
			return fprintf(stderr, "--run-ms: `%s` is not a number of ms\n", argv[2]), 2;
		argv += 2;
		argc -= 2;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s [--run-ms MS] BDF | migrate ... | syscost [empty-bpf] [N]\n", argv[0]);
		return 2;
	}
	bdf = argv[1];
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return perror(path), 2;
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", basename(link));
	container = open("/dev/vfio/vfio", O_RDWR);
	group = open(path, O_RDWR);
	if (container < 0 || group < 0)
		return perror("open vfio"), 2;
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) ||
	    ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		return perror("container"), 2;
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		return perror("VFIO_GROUP_GET_DEVICE_FD"), 2;

	memset(fbuf, 0, sizeof(fbuf));
	feat->argsz = sizeof(fbuf);
	feat->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION;
	CHECK(ioctl(dev, VFIO_DEVICE_FEATURE, fbuf) == 0, "migration feature, flags 0x%llx",
	      (unsigned long long)((struct vfio_device_feature_migration *)feat->data)->flags);

	CHECK(ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &reg) == 0, "BAR0 region info");
	bar0 = reg.offset;
	CHECK(!(reg.flags & VFIO_REGION_INFO_FLAG_MMAP), "BAR0 is not mmappable (flags 0x%x)",
	      reg.flags);
	CHECK(rd32(0) == 0x010000ed, "edu id 0x%x", rd32(0));
	CHECK(enable_bus_master() == 0, "bus master enabled");
	efd = enable_msi();
	CHECK(efd >= 0, "MSI routed to an eventfd");

	mem = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(mem, 0xaa, 1 << 16);
	map.vaddr = (uintptr_t)mem;
	map.iova = 0x100000;
	map.size = 1 << 16;
	map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0, "map 64 KiB at iova 0x100000");

	if (run_ms) {
		uint64_t before = 0;

		/* What a VMM knows before it runs the device: a tracer learns it from this GET. */
		CHECK(get_state() == VFIO_DEVICE_STATE_RUNNING, "GET reports RUNNING before the run");
		t0 = now_ms();
		usleep(run_ms * 1000);
		if (efd >= 0 && read(efd, &before, 8) != 8)
			before = 0;
		/* The eventfd was read here: the interrupt check below counts only later ones. */
		printf("ok: RUNNING for %.1f ms: %llu interrupts on the eventfd\n", now_ms() - t0,
		       (unsigned long long)before);
	}

	/* A transfer edu -> RAM in flight when RUNNING_P2P is requested: the SET must drain it. */
	wr64(0x80, 0x40000);
	wr64(0x88, 0x100000);
	wr64(0x90, 256);
	wr64(0x98, 1 | 2 | 4);
	t0 = now_ms();
	set_and_get(VFIO_DEVICE_STATE_RUNNING_P2P, NULL);
	CHECK(!(rd64(0x98) & 1), "no DMA in flight after RUNNING_P2P (drain took %.1f ms)",
	      now_ms() - t0);
	CHECK(mem[0] != 0xaa, "the drained transfer landed (byte 0x%02x)", mem[0]);

	/* A new transfer while quiesced is held, then started on RUNNING. */
	wr64(0x88, 0x108000);
	wr64(0x98, 1 | 2 | 4);
	usleep(400000);
	CHECK(mem[0x8000] == 0xaa, "held transfer did not run while quiesced");
	CHECK(rd64(0x98) & 1, "held command reads as pending");

	set_and_get(VFIO_DEVICE_STATE_STOP, NULL);
	fd = -1;
	set_and_get(VFIO_DEVICE_STATE_STOP_COPY, &fd);
	CHECK(fd >= 0, "STOP_COPY data fd %d", fd);
	while (fd >= 0 && (n = read(fd, save + saved, sizeof(save) - saved)) > 0)
		saved += n;
	CHECK(saved > 0, "saved %zd bytes", saved);
	if (fd >= 0)
		close(fd);
	set_and_get(VFIO_DEVICE_STATE_STOP, NULL);
	fd = -1;
	set_and_get(VFIO_DEVICE_STATE_RESUMING, &fd);
	CHECK(fd >= 0 && write(fd, save, saved) == saved, "wrote %zd bytes back", saved);
	if (fd >= 0)
		close(fd);
	set_and_get(VFIO_DEVICE_STATE_STOP, NULL);
	CHECK(mem[0x8000] == 0xaa, "held transfer still not run in STOP");
	set_and_get(VFIO_DEVICE_STATE_RUNNING, NULL);
	usleep(400000);
	CHECK(mem[0x8000] != 0xaa, "held transfer ran after RUNNING (byte 0x%02x)", mem[0x8000]);
	/* A multi-arc request, computed by the kernel one arc at a time. */
	set_and_get(VFIO_DEVICE_STATE_STOP, NULL);
	set_and_get(VFIO_DEVICE_STATE_RUNNING, NULL);
	CHECK(efd >= 0 && read(efd, &irqs, 8) == 8 && irqs >= 2, "%llu interrupts (eventfd)",
	      (unsigned long long)irqs);
	CHECK(ioctl(dev, VFIO_DEVICE_RESET) == 0, "VFIO_DEVICE_RESET");
	CHECK(get_state() == VFIO_DEVICE_STATE_RUNNING, "RUNNING after reset");
	printf("SELFTEST %s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
