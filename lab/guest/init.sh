#!/bin/busybox sh
# migscope lab guest /init: mount, load VFIO + edu-mig, run the scenarios in /lab/run.sh,
# send /out back as a tar stream on the second serial port, power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /out /run
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ulimit -l unlimited 2>/dev/null
echo "LAB:BOOT uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
# The release binary (from the dist tarball) on a system without libc: static, or this fails.
echo "LAB:MIGSCOPE $(migscope --version 2>&1)"

lab_fail() { echo "LAB:FATAL $*"; echo "LAB:DONE"; poweroff -f; }

for m in irqbypass vfio vfio_virqfd vfio_iommu_type1 vfio-pci-core vfio-pci edu-mig; do
	[ -f /lib/modules/$m.ko ] || continue
	insmod /lib/modules/$m.ko || lab_fail "insmod $m"
done

EDU_DEVS=""
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ] || continue
	EDU_DEVS="$EDU_DEVS ${d##*/}"
done
[ -n "$EDU_DEVS" ] || lab_fail "no edu device (1234:11e8)"
for b in $EDU_DEVS; do
	echo edu_mig > /sys/bus/pci/devices/$b/driver_override
	echo $b > /sys/bus/pci/drivers_probe
	[ -e /sys/bus/pci/drivers/edu_mig/$b ] || lab_fail "edu-mig did not bind $b"
done
echo "LAB:READY uptime=$(cut -d' ' -f1 /proc/uptime) devices=$(echo $EDU_DEVS)"

# lab_scenario NAME BUG PRECOPY -- CMD...: configure edu-mig, rebind (flags are read at
# probe), run CMD with its output in /out/NAME, print one result marker.
lab_scenario() {
	name=$1 bug=$2 precopy=$3
	shift 4
	echo "$bug" > /sys/module/edu_mig/parameters/bug
	echo "$precopy" > /sys/module/edu_mig/parameters/precopy
	for b in $EDU_DEVS; do
		echo $b > /sys/bus/pci/drivers/edu_mig/unbind
		echo $b > /sys/bus/pci/drivers_probe
	done
	mkdir -p /out/$name
	dmesg -c > /dev/null
	t0=$(cut -d' ' -f1 /proc/uptime)
	echo "LAB:START $name"
	( cd /out/$name && "$@" ) > /out/$name/stdout 2> /out/$name/stderr
	rc=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	dmesg > /out/$name/dmesg
	echo "LAB:RESULT $name rc=$rc t0=$t0 t1=$t1"
}

# await_recording: until the `migscope record` started in this directory says it records
# (its stderr in record.err), at most 20 s.
await_recording() {
	i=0
	while ! grep -q recording record.err 2> /dev/null && [ $i -lt 200 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

# rec_selftest BDF: the probe alone (migscope record) beside the driver self-test; returns
# record's status (the trace is judged on the host).
rec_selftest() {
	migscope record -o trace.jsonl 2> record.err &
	p=$!
	await_recording
	edu-selftest "$1" > selftest.out
	st=$?
	grep -i 'vfio\|edu\|CPU' /proc/interrupts > interrupts.txt
	sleep 0.5
	kill -INT $p
	wait $p
	rc=$?
	echo "record=$rc selftest=$st"
	return $rc
}

# rec_attach [--pause-at STOP_COPY] BDF...: edu-selftest's migrate mode opens the devices,
# sets up MSI and a DMA map (and with --pause-at walks to STOP_COPY), then waits; only then is
# `migscope record --pid` attached to it, a process that already holds its devices, as beside
# a running QEMU. It then migrates; record ends when it exits. Returns record's status (the
# trace is judged on the host).
rec_attach() {
	rm -f ready go
	edu-selftest migrate --ready ready --go go "$@" > selftest.out 2>&1 &
	s=$!
	i=0
	while [ ! -s ready ] && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	migscope record --pid $s -o trace.jsonl 2> record.err &
	p=$!
	await_recording
	touch go
	wait $s
	st=$?
	grep -i 'vfio\|edu\|CPU' /proc/interrupts > interrupts.txt
	wait $p
	rc=$?
	echo "record=$rc selftest=$st"
	return $rc
}

# drive_rec CMD...: runs CMD (migscope drive) with `migscope record` beside it writing
# probe.jsonl, for as long as drive's own trace has no probe events.
drive_rec() {
	migscope record -o probe.jsonl 2> record.err &
	p=$!
	await_recording
	"$@"
	rc=$?
	sleep 0.3
	kill -INT $p
	wait $p
	return $rc
}

[ -f /lab/run.sh ] && . /lab/run.sh

if [ -e /dev/ttyS1 ]; then
	stty -F /dev/ttyS1 raw -echo 2>/dev/null
	tar -c -C /out . > /dev/ttyS1
	sleep 0.2
fi
echo "LAB:DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
