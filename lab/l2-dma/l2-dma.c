// SPDX-License-Identifier: GPL-2.0-only
/*
 * l2-dma: the lab's L2 guest. A multiboot (v1) ELF32 that QEMU loads with -kernel inside the
 * lab guest; no libc, no paging (a linear address is the guest-physical address, which QEMU
 * maps as the IOVA of an assigned device). It finds every edu (1234:11e8) through PCI
 * configuration mechanism #1 (0xCF8/0xCFC), enables memory decoding and bus mastering, points
 * edu's MSI at the local APIC, and keeps edu DMA transfers running back to back: RAM -> edu's
 * buffer, then edu's buffer -> RAM, compared, each completion signalled by an interrupt
 * (cmd bit 2) that the handler acknowledges at edu and the local APIC. Progress goes to COM1,
 * one `L2:` line per event, which the lab reads back.
 *
 * edu (QEMU hw/misc/edu.c): BAR0 registers irq status 0x24, irq ack 0x64, DMA src 0x80,
 * dst 0x88, count 0x90, cmd 0x98 (bit 0 run, bit 1 edu -> RAM, bit 2 interrupt 0x100 on
 * completion); its buffer sits at device address 0x40000 (4 KiB); every address it is given is
 * masked with dma_mask (28 bits by default: this program lives at 1 MiB); each transfer runs
 * from a timer 100 ms (virtual clock) after the command.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define MB_MAGIC 0x1BADB002u
#define MB_FLAGS 0u

__attribute__((section(".multiboot"), used, aligned(4))) static const u32 multiboot_header[3] = {
	MB_MAGIC, MB_FLAGS, (u32)-(MB_MAGIC + MB_FLAGS)
};

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_IRQ_STATUS 0x24
#define EDU_IRQ_ACK 0x64
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_RUN 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_DMA_IRQ 0x4
#define EDU_IRQ_DMA 0x100
#define EDU_BUF 0x40000
#define XFER 1024

#define LAPIC 0xFEE00000u
#define LAPIC_EOI 0xB0
#define LAPIC_SVR 0xF0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3E0
#define VEC_TIMER 0x20
#define VEC_EDU 0x30
#define VEC_SPURIOUS 0xFF
/* QEMU's APIC timer counts nanoseconds with divide-by-1 (hw/intc/apic.c): 10 ms ticks. */
#define TICK_NS 10000000u
#define TICKS_PER_S 100u
/* A transfer's interrupt not seen after this long: poll the engine (and say so). */
#define LOST_IRQ_TICKS (3 * TICKS_PER_S)

#define MAX_DEVS 4

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 rd32(u32 addr) { return *(volatile u32 *)addr; }
static inline void wr32(u32 addr, u32 v) { *(volatile u32 *)addr = v; }

/* ---- COM1 -------------------------------------------------------------------------------- */

#define COM1 0x3F8

static void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* no UART interrupts */
	outb(COM1 + 3, 0x80); /* DLAB */
	outb(COM1 + 0, 0x01); /* 115200 */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03); /* 8N1 */
	outb(COM1 + 2, 0xC7); /* FIFO on, cleared */
}

static void putch(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (u8)c);
}

static void put_u(u32 v, u32 base)
{
	char b[12];
	int i = 0;

	do {
		b[i++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (i)
		putch(b[--i]);
}

static volatile u32 ticks;

/* say("fmt", ...): %u %x %s only; every line starts with "L2: t=<10 ms ticks> ". */
static void say(const char *fmt, ...)
{
	__builtin_va_list ap;

	__builtin_va_start(ap, fmt);
	for (const char *p = "L2: t="; *p; p++)
		putch(*p);
	put_u(ticks, 10);
	putch(' ');
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			putch(*fmt);
			continue;
		}
		switch (*++fmt) {
		case 'u':
			put_u(__builtin_va_arg(ap, u32), 10);
			break;
		case 'x':
			put_u(__builtin_va_arg(ap, u32), 16);
			break;
		case 's':
			for (const char *s = __builtin_va_arg(ap, const char *); *s; s++)
				putch(*s);
			break;
		default:
			putch('?');
		}
	}
	putch('\n');
	__builtin_va_end(ap);
}

/* ---- PCI configuration mechanism #1 ------------------------------------------------------ */

static u32 cfg_addr(u32 bdf, u32 off)
{
	return 0x80000000u | (bdf << 8) | (off & 0xFC);
}

static u32 cfg_rd32(u32 bdf, u32 off)
{
	outl(0xCF8, cfg_addr(bdf, off));
	return inl(0xCFC);
}

static u16 cfg_rd16(u32 bdf, u32 off)
{
	return (u16)(cfg_rd32(bdf, off) >> ((off & 2) * 8));
}

static u8 cfg_rd8(u32 bdf, u32 off)
{
	return (u8)(cfg_rd32(bdf, off) >> ((off & 3) * 8));
}

static void cfg_wr32(u32 bdf, u32 off, u32 v)
{
	outl(0xCF8, cfg_addr(bdf, off));
	outl(0xCFC, v);
}

static void cfg_wr16(u32 bdf, u32 off, u16 v)
{
	outl(0xCF8, cfg_addr(bdf, off));
	outw(0xCFC + (off & 2), v);
}

/* ---- descriptor tables and interrupt entry ----------------------------------------------- */

static u64 gdt[3] = {
	0,
	0x00CF9A000000FFFFull, /* 0x08: flat 32-bit code */
	0x00CF92000000FFFFull, /* 0x10: flat data */
};

struct idt_gate {
	u16 off_lo;
	u16 sel;
	u8 zero;
	u8 type;
	u16 off_hi;
} __attribute__((packed));

struct dtr {
	u16 limit;
	u32 base;
} __attribute__((packed));

static struct idt_gate idt[256];

extern const u32 l2_exc_stubs[32];
extern char l2_irq_stub_timer[], l2_irq_stub_spurious[], l2_irq_stub_other[];
extern char l2_irq_stub_edu0[], l2_irq_stub_edu1[], l2_irq_stub_edu2[], l2_irq_stub_edu3[];

/* Entry, flat segments, and the interrupt stubs (each calls l2_irq(vector) or l2_fatal). */
__asm__(".section .text\n"
	".globl _start\n"
	"_start:\n"
	"	cli\n"
	"	movl $l2_stack_top, %esp\n"
	"	pushl %ebx\n"
	"	pushl %eax\n"
	"	call l2_main\n"
	"1:	cli\n"
	"	hlt\n"
	"	jmp 1b\n"
	".macro L2IRQ name, vec\n"
	".globl \\name\n"
	"\\name:\n"
	"	pushal\n"
	"	cld\n"
	"	pushl $\\vec\n"
	"	call l2_irq\n"
	"	addl $4, %esp\n"
	"	popal\n"
	"	iretl\n"
	".endm\n"
	"L2IRQ l2_irq_stub_timer, 0x20\n"
	"L2IRQ l2_irq_stub_edu0, 0x30\n"
	"L2IRQ l2_irq_stub_edu1, 0x31\n"
	"L2IRQ l2_irq_stub_edu2, 0x32\n"
	"L2IRQ l2_irq_stub_edu3, 0x33\n"
	"L2IRQ l2_irq_stub_spurious, 0xff\n"
	"L2IRQ l2_irq_stub_other, 0x100\n"
	".irp v,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"l2_exc_\\v:\n"
	"	cld\n"
	"	pushl $\\v\n"
	"	call l2_fatal\n"
	"2:	cli\n"
	"	hlt\n"
	"	jmp 2b\n"
	".endr\n"
	".section .rodata\n"
	".align 4\n"
	".globl l2_exc_stubs\n"
	"l2_exc_stubs:\n"
	".irp v,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	.long l2_exc_\\v\n"
	".endr\n"
	".section .text\n");

static void set_gate(u32 vec, u32 handler)
{
	idt[vec].off_lo = (u16)handler;
	idt[vec].sel = 0x08;
	idt[vec].zero = 0;
	idt[vec].type = 0x8E; /* present, ring 0, 32-bit interrupt gate */
	idt[vec].off_hi = (u16)(handler >> 16);
}

static void tables_init(void)
{
	struct dtr g = { sizeof(gdt) - 1, (u32)gdt };
	struct dtr i = { sizeof(idt) - 1, (u32)idt };

	__asm__ volatile("lgdt %0\n"
			 "ljmp $0x08, $1f\n"
			 "1: movw $0x10, %%ax\n"
			 "movw %%ax, %%ds\n"
			 "movw %%ax, %%es\n"
			 "movw %%ax, %%fs\n"
			 "movw %%ax, %%gs\n"
			 "movw %%ax, %%ss\n"
			 :
			 : "m"(g)
			 : "eax", "memory");
	for (u32 v = 0; v < 256; v++)
		set_gate(v, (u32)l2_irq_stub_other);
	for (u32 v = 0; v < 32; v++)
		set_gate(v, l2_exc_stubs[v]);
	set_gate(VEC_TIMER, (u32)l2_irq_stub_timer);
	set_gate(VEC_EDU + 0, (u32)l2_irq_stub_edu0);
	set_gate(VEC_EDU + 1, (u32)l2_irq_stub_edu1);
	set_gate(VEC_EDU + 2, (u32)l2_irq_stub_edu2);
	set_gate(VEC_EDU + 3, (u32)l2_irq_stub_edu3);
	set_gate(VEC_SPURIOUS, (u32)l2_irq_stub_spurious);
	__asm__ volatile("lidt %0" : : "m"(i) : "memory");
}

/* ---- the edu devices --------------------------------------------------------------------- */

enum phase { IDLE, TO_DEV, TO_RAM };

struct edu {
	u32 bdf;
	u32 bar;
	enum phase phase;
	volatile u32 irq_bits; /* acknowledged status bits not yet consumed */
	volatile u32 irqs;
	u32 since; /* tick the current transfer was started */
	u32 pairs, bad, lost;
};

static struct edu devs[MAX_DEVS];
static u32 ndevs;
static volatile u32 other_irqs;
static u8 src_buf[MAX_DEVS][XFER] __attribute__((aligned(4096)));
static u8 dst_buf[MAX_DEVS][XFER] __attribute__((aligned(4096)));
__attribute__((used, aligned(16))) u8 l2_stack[16384];
__asm__(".globl l2_stack_top\n.set l2_stack_top, l2_stack + 16384\n");

void l2_fatal(u32 vec)
{
	say("FATAL exception %u", vec);
}

void l2_irq(u32 vec)
{
	if (vec == VEC_SPURIOUS)
		return; /* no EOI for the spurious vector */
	if (vec == VEC_TIMER) {
		ticks++;
	} else if (vec >= VEC_EDU && vec < VEC_EDU + ndevs) {
		struct edu *d = &devs[vec - VEC_EDU];
		u32 st = rd32(d->bar + EDU_IRQ_STATUS);

		if (st)
			wr32(d->bar + EDU_IRQ_ACK, st);
		d->irq_bits |= st;
		d->irqs++;
	} else {
		other_irqs++;
	}
	wr32(LAPIC + LAPIC_EOI, 0);
}

static void lapic_init(void)
{
	/* The BIOS left the 8259s delivering IRQ0-7 at vectors 8-15: mask them, APIC only. */
	outb(0x21, 0xFF);
	outb(0xA1, 0xFF);
	wr32(LAPIC + LAPIC_SVR, 0x100 | VEC_SPURIOUS);
	wr32(LAPIC + LAPIC_TIMER_DIV, 0xB); /* divide by 1 */
	wr32(LAPIC + LAPIC_LVT_TIMER, (1u << 17) | VEC_TIMER); /* periodic */
	wr32(LAPIC + LAPIC_TIMER_INIT, TICK_NS);
}

/* Finds the MSI capability and points it at the BSP's local APIC, vector `vec`. */
static int msi_enable(u32 bdf, u32 vec)
{
	u32 cap;

	if (!(cfg_rd16(bdf, 0x06) & 0x10))
		return -1;
	for (cap = cfg_rd8(bdf, 0x34) & 0xFC; cap; cap = cfg_rd8(bdf, cap + 1) & 0xFC) {
		u16 ctl;

		if (cfg_rd8(bdf, cap) != 0x05)
			continue;
		ctl = cfg_rd16(bdf, cap + 2);
		cfg_wr32(bdf, cap + 4, LAPIC); /* destination APIC 0, fixed, edge */
		if (ctl & 0x80) {
			cfg_wr32(bdf, cap + 8, 0);
			cfg_wr16(bdf, cap + 0xC, (u16)vec);
		} else {
			cfg_wr16(bdf, cap + 8, (u16)vec);
		}
		cfg_wr16(bdf, cap + 2, (u16)((ctl & ~0x70) | 0x1)); /* one vector, enabled */
		return 0;
	}
	return -1;
}

static void find_devices(void)
{
	for (u32 dev = 0; dev < 32 && ndevs < MAX_DEVS; dev++) {
		u32 bdf = dev << 3;
		u32 id = cfg_rd32(bdf, 0);
		struct edu *d;
		u32 bar;

		if ((id & 0xFFFF) != EDU_VENDOR || (id >> 16) != EDU_DEVICE)
			continue;
		bar = cfg_rd32(bdf, 0x10);
		if (bar & 1 || !(bar & ~0xFu)) {
			say("edu 00:%x.0 has no memory BAR0 (%x): skipped", dev, bar);
			continue;
		}
		d = &devs[ndevs];
		d->bdf = bdf;
		d->bar = bar & ~0xFu;
		/* memory decoding, bus mastering, INTx off (MSI only) */
		cfg_wr16(bdf, 0x04, (u16)(cfg_rd16(bdf, 0x04) | 0x2 | 0x4 | 0x400));
		if (msi_enable(bdf, VEC_EDU + ndevs)) {
			say("edu 00:%x.0 has no MSI capability: skipped", dev);
			continue;
		}
		wr32(d->bar + EDU_IRQ_ACK, rd32(d->bar + EDU_IRQ_STATUS));
		say("edu %u at 00:%x.0 bar0 %x msi vector %x", ndevs, dev, d->bar, VEC_EDU + ndevs);
		ndevs++;
	}
}

/* The bytes of pair `n` on device `i` (the destination buffer is checked against it). */
static u8 pattern(u32 n, u32 i, u32 k)
{
	return (u8)(n * 7 + k * 13 + i);
}

static void start(struct edu *d, u32 i, enum phase p)
{
	if (p == TO_DEV) {
		for (u32 k = 0; k < XFER; k++)
			src_buf[i][k] = pattern(d->pairs, i, k);
		wr32(d->bar + EDU_DMA_SRC, (u32)src_buf[i]);
		wr32(d->bar + EDU_DMA_DST, EDU_BUF);
		wr32(d->bar + EDU_DMA_CNT, XFER);
		wr32(d->bar + EDU_DMA_CMD, EDU_DMA_RUN | EDU_DMA_IRQ);
	} else {
		for (u32 k = 0; k < XFER; k++)
			dst_buf[i][k] = 0;
		wr32(d->bar + EDU_DMA_SRC, EDU_BUF);
		wr32(d->bar + EDU_DMA_DST, (u32)dst_buf[i]);
		wr32(d->bar + EDU_DMA_CNT, XFER);
		wr32(d->bar + EDU_DMA_CMD, EDU_DMA_RUN | EDU_DMA_TO_RAM | EDU_DMA_IRQ);
	}
	d->phase = p;
	d->since = ticks;
}

/*
 * A transfer finished: the next one is started first (the engine idles as briefly as the
 * guest can make it: a migration's quiesce should find a transfer in flight), then the pair
 * just completed is checked and reported.
 */
static void completed(struct edu *d, u32 i)
{
	u32 n = d->pairs;

	if (d->phase == TO_DEV) {
		start(d, i, TO_RAM);
		return;
	}
	d->pairs++;
	start(d, i, TO_DEV);
	for (u32 k = 0; k < XFER; k++) {
		if (dst_buf[i][k] != pattern(n, i, k)) {
			d->bad++;
			say("dma dev=%u pair=%u MISMATCH at byte %u", i, d->pairs, k);
			break;
		}
	}
	say("dma dev=%u pair=%u irqs=%u bad=%u lost=%u", i, d->pairs, d->irqs, d->bad, d->lost);
}

void l2_main(u32 magic, u32 mbi)
{
	(void)mbi;
	serial_init();
	say("boot multiboot magic %x", magic);
	tables_init();
	lapic_init();
	find_devices();
	say("ready devices=%u", ndevs);
	for (u32 i = 0; i < ndevs; i++)
		start(&devs[i], i, TO_DEV);
	for (;;) {
		/* Interrupts are taken only inside sti;hlt (sti's shadow covers the hlt). */
		__asm__ volatile("sti\n\thlt\n\tcli" : : : "memory");
		for (u32 i = 0; i < ndevs; i++) {
			struct edu *d = &devs[i];

			if (d->irq_bits & EDU_IRQ_DMA) {
				d->irq_bits &= ~EDU_IRQ_DMA;
				completed(d, i);
			} else if (d->phase != IDLE && ticks - d->since > LOST_IRQ_TICKS &&
				   !(rd32(d->bar + EDU_DMA_CMD) & EDU_DMA_RUN)) {
				d->lost++;
				say("dma dev=%u: transfer done without its interrupt", i);
				completed(d, i);
			}
		}
	}
}
