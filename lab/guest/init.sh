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

# lab_scenario NAME BUG PRECOPY DMA_LOG -- CMD...: configure edu-mig, rebind (flags and log_ops
# are read at probe), run CMD with its output in /out/NAME, print one result marker.
lab_scenario() {
	name=$1 bug=$2 precopy=$3 dma_log=$4
	shift 5
	echo "$bug" > /sys/module/edu_mig/parameters/bug
	echo "$precopy" > /sys/module/edu_mig/parameters/precopy
	echo "$dma_log" > /sys/module/edu_mig/parameters/dma_log
	# No storm unless the scenario's command asks (rec_storm sets it before the device opens).
	echo 0 > /sys/module/edu_mig/parameters/storm
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
# record's status (the trace is judged on the host). A second recorder with every interrupt
# exact (--irq-detail all) runs at the same time into trace-all.jsonl: the host holds its
# verdict to the default one's.
rec_selftest() {
	migscope record -o trace.jsonl 2> record.err &
	p=$!
	migscope record --irq-detail all -o trace-all.jsonl 2> record-all.err &
	pa=$!
	await_recording
	wait_for record-all.err recording 200 || echo "rec_selftest: record --irq-detail all never said recording"
	edu-selftest "$1" > selftest.out
	st=$?
	grep -i 'vfio\|edu\|CPU' /proc/interrupts > interrupts.txt
	sleep 0.5
	kill -INT $p $pa
	wait $pa
	wait $p
	rc=$?
	echo "record=$rc selftest=$st"
	return $rc
}

# rec_storm [-measure] [-qring BYTES] RATE BDF: rec_selftest with an interrupt storm: edu-mig's
# storm=RATE (read when the device opens) raises up to RATE interrupts a second while the device
# may DMA, and the self-test keeps the device RUNNING for 3 s first (--run-ms). Two recorders are
# judged: `migscope record` (interrupts binned while the device may DMA) into trace.jsonl and
# `--irq-detail all` into trace-all.mst, the native format with a 64 MiB ring (a full-detail
# recorder must lose nothing for the two to be compared: JSONL under TCG cannot keep up with
# the storm, its ring overflows). -qring gives the binned recorder a ring of BYTES too (a
# storm that goes on while quiesced is every interrupt exact in both). -measure adds, for bytes
# only, full-detail JSONL beside them (storm-all.jsonl, 64 MiB ring) and then a second run of
# the self-test with binned recorders alone (storm-bins.jsonl, storm-bins.mst: default ring),
# the rate the storm reaches when no recorder writes each interrupt. Returns record's status.
rec_storm() {
	measure=0 qring=""
	while :; do
		case $1 in
		-measure) measure=1 ;;
		-qring) qring="--ring-bytes $2"; shift ;;
		*) break ;;
		esac
		shift
	done
	echo "$1" > /sys/module/edu_mig/parameters/storm
	big="--ring-bytes 67108864"
	# shellcheck disable=SC2086
	migscope record $qring -o trace.jsonl 2> record.err &
	p=$!
	# shellcheck disable=SC2086
	migscope record --irq-detail all --format native $big -o trace-all.mst 2> record-all.err &
	pa=$!
	pm=""
	if [ $measure = 1 ]; then
		# shellcheck disable=SC2086
		migscope record --irq-detail all $big -o storm-all.jsonl 2> record-all-jsonl.err &
		pm=$!
		wait_for record-all-jsonl.err recording 300 || echo "rec_storm: full-detail JSONL record never said recording"
	fi
	await_recording
	wait_for record-all.err recording 300 || echo "rec_storm: record --irq-detail all never said recording"
	edu-selftest --run-ms 3000 "$2" > selftest.out
	st=$?
	sleep 0.5
	# shellcheck disable=SC2086
	kill -INT $p $pa $pm
	[ -z "$pm" ] || wait $pm
	wait $pa
	wait $p
	rc=$?
	if [ $measure = 1 ]; then
		migscope record -o storm-bins.jsonl 2> record-bins-jsonl.err &
		pb=$!
		migscope record --format native -o storm-bins.mst 2> record-bins.err &
		pn=$!
		wait_for record-bins-jsonl.err recording 300 || echo "rec_storm: binned JSONL record never said recording"
		wait_for record-bins.err recording 300 || echo "rec_storm: binned native record never said recording"
		edu-selftest --run-ms 3000 "$2" > selftest-bins.out || echo "rec_storm: the second self-test failed"
		sleep 0.5
		kill -INT $pb $pn
		wait $pb $pn
	fi
	echo 0 > /sys/module/edu_mig/parameters/storm
	echo "record=$rc selftest=$st"
	return $rc
}

# syscall_cost: what an unrelated syscall (ioctl on /dev/null, 1-byte read of /dev/zero and
# write to /dev/null) costs with nothing attached, with one empty BPF program on
# sys_enter_ioctl (the floor of any syscall-tracepoint hook), beside `migscope record --hooks
# tracepoint` and beside `--hooks direct` (issue 16): one `SYSCOST <case> ...` line each.
# Printed, not judged (TCG timings); fails only when a case cannot run.
syscall_cost() {
	edu-selftest syscost 50000 > cost.out || return 1
	sed 's/^SYSCOST/SYSCOST none/' cost.out
	edu-selftest syscost empty-bpf 50000 > cost.out || return 1
	sed 's/^SYSCOST/SYSCOST empty-bpf/' cost.out
	for h in tracepoint direct; do
		t0=$(up10)
		migscope record --hooks $h -o cost-$h.jsonl 2> record-$h.err &
		p=$!
		if ! wait_for record-$h.err recording 1200; then
			echo "syscall_cost: record --hooks $h never said recording"
			cat record-$h.err
			kill -INT $p
			return 1
		fi
		edu-selftest syscost 50000 > cost.out
		st=$?
		kill -INT $p
		wait $p
		[ $st = 0 ] || return 1
		sed "s/^SYSCOST/SYSCOST record-$h/" cost.out
		echo "record-$h started in $(( $(up10) - t0 ))/10 s: $(grep -o 'hooks [a-z]*)' record-$h.err | head -1)"
	done
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

# drive_inflight CMD...: CMD (a drive_rec run whose scenario judges its evidence) needs a
# transfer in flight at the quiesce, or the witness proved nothing about a drain. An attempt where
# edu happened to be between two transfers (TCG on a loaded host moves drive's dwell off the
# transfer) is repeated with a cleared log, so the judged dmesg and traces are the last attempt's
# alone (at most 5 attempts; edu-mig's dmesg says which attempt drained).
drive_inflight() {
	attempt=1
	while :; do
		"$@"
		st=$?
		dmesg | grep -q "drained in-flight DMA" || [ $attempt -ge 5 ] && break
		echo "drive: attempt $attempt: no transfer was in flight at the quiesce; again"
		dmesg -c > /dev/null
		attempt=$((attempt + 1))
	done
	echo "drive: attempts $attempt"
	return $st
}

# tui_wait CMD: until the shell command CMD succeeds, at most 120 s by the clock.
tui_wait() {
	tw_end=$(($(up10) + 1200))
	until eval "$1"; do
		[ "$(up10)" -lt $tw_end ] || return 1
		sleep 0.1
	done
}

# tui_give_up WHY: a drive_tui wait ran out: say why, keep the pane (fail.txt), quit the view
# and end tmux.
tui_give_up() {
	echo "drive_tui: $1" >&2
	tmux -L lab capture-pane -p -t drive > fail.txt 2>&1
	tmux -L lab send-keys -t drive q
	tui_wait '[ -s drive.rc ]'
	tmux -L lab kill-server
}

# drive_tui BDF: `migscope drive --tui` on the device in a tmux pane (120x40, in this
# directory), read back with `tmux capture-pane -p`: mid.txt once drive's trace has the SET to
# STOP_COPY done and the view lists it (the device is quiesced: RUNNING_P2P, STOP_COPY and
# STOP each dwell 2 s), with the SETs the trace had right then (mid.sets); final.txt once the
# trace is complete (renamed from .partial: the verdict is final) and the view shows a final
# verdict; then `q`, and after.txt (the terminal given back, drive's results printed). Every
# wait is on such a fact, at most 120 s each. drive's stderr, with the view's frame times
# (MIGSCOPE_TUI_FRAMES), in drive.err. Returns drive's exit status.
drive_tui() {
	bdf=$1
	# tmux clients whose stdin is a terminal (the console) make the server read its terminfo,
	# which the guest does not carry ("can't find terminfo database"); no client needs one.
	exec < /dev/null
	rm -f drive.rc trace.jsonl trace.jsonl.partial
	tmux -L lab new-session -d -s drive -x 120 -y 40 -c "$PWD" \
		"MIGSCOPE_TUI_FRAMES=1 migscope drive --device $bdf --plan stopcopy --workload edu --dwell-ms 2000 -o trace.jsonl --tui 2> drive.err; echo \$? > drive.rc; sleep 600" ||
		return 3
	stopcopy="\"ev\":\"set_done\",\"dev\":\"$bdf\",\"to\":\"STOP_COPY\",\"ret\":0"
	tui_wait 'grep -q "$stopcopy" trace.jsonl.partial 2> /dev/null' ||
		{ tui_give_up "the trace never had the SET to STOP_COPY done"; return 3; }
	tui_wait 'tmux -L lab capture-pane -p -t drive > mid.txt && grep -q "set_done $bdf STOP_COPY" mid.txt' ||
		{ tui_give_up "the view never listed the SET to STOP_COPY"; return 3; }
	grep '"ev":"set' trace.jsonl.partial > mid.sets
	tui_wait '[ -f trace.jsonl ]' || { tui_give_up "the trace was never completed"; return 3; }
	tui_wait 'tmux -L lab capture-pane -p -t drive > final.txt && head -n 1 final.txt | grep -qE " (PASS|FAIL|INCONCLUSIVE)  [0-9]+ viol"' ||
		{ tui_give_up "the view never showed a final verdict"; return 3; }
	tmux -L lab send-keys -t drive q
	tui_wait '[ -s drive.rc ]' || { tui_give_up "drive did not end on q"; return 3; }
	tmux -L lab capture-pane -p -t drive > after.txt
	tmux -L lab kill-server
	return "$(cat drive.rc)"
}

# drive_rss SECS BASE_SECS: `migscope drive` on 0000:00:02.0 with the edu workload through 1500 cycles
# of RUNNING_P2P,STOP_COPY,STOP,RUNNING_P2P,RUNNING, ended with SIGINT after SECS seconds
# (drive returns the device to RUNNING and completes the trace); its VmRSS and VmHWM every
# 10 s (`rss-sample` lines), then one `rss BIN secs= first= last= hwm= events= exit=` line
# (first: the first sample 60 s in, past the set-up). With /bin/migscope-base (an earlier
# build, MIGSCOPE_LAB_BASE) the same for it first, for BASE_SECS. Returns 1 when a drive left
# no trace.
drive_rss() {
	cycle=RUNNING_P2P,STOP_COPY,STOP,RUNNING_P2P,RUNNING
	plan=$(awk -v c=$cycle 'BEGIN { s = c; for (i = 1; i < 1500; i++) s = s "," c; print s }')
	rss_rc=0
	for bin in migscope-base migscope; do
		command -v $bin > /dev/null || continue
		$bin drive --device 0000:00:02.0 --plan "$plan" --workload edu -o $bin.jsonl > $bin.out 2> $bin.err &
		p=$!
		secs=$1
		[ $bin = migscope ] || secs=$2
		t0=$(up10)
		first="" rss="" hwm=""
		while kill -0 $p 2> /dev/null && [ "$(up10)" -lt $((t0 + secs * 10)) ]; do
			s=$((($(up10) - t0) / 10))
			rss=$(awk '/^VmRSS/ { print $2 }' /proc/$p/status)
			hwm=$(awk '/^VmHWM/ { print $2 }' /proc/$p/status)
			[ -n "$first" ] || [ $s -lt 60 ] || first=$rss
			echo "rss-sample $bin t=$s rss=$rss hwm=$hwm"
			sleep 10
		done
		kill -INT $p
		wait $p
		st=$?
		events=$(grep -c . $bin.jsonl 2> /dev/null)
		echo "rss $bin secs=$((($(up10) - t0) / 10)) first=$first last=$rss hwm=$hwm events=$events exit=$st"
		[ -f $bin.jsonl ] || rss_rc=1
		rm -f ./*.mig
	done
	return $rss_rc
}

# ---- QEMU as the L2 VMM (the qemu-* scenarios) -------------------------------------------
# The lab's own QEMU (appended to the initramfs only when a qemu-* scenario runs) assigns the
# edu devices bound to edu-mig, migrates them to a file, and a second QEMU loads them. Each QEMU
# is traced by its own `migscope record`, as a user beside a real migration runs one per host:
# started before QEMU (no --pid: every VFIO user) or attached after QEMU opened its devices
# (`--pid`, ending with QEMU). QEMU's own trace, stderr, HMP log and L2 serial come back too.
QEMU_L2="qemu-system-x86_64 -L /usr/share/qemu -L /usr/share/seabios -machine q35 -accel tcg -m 64 -nodefaults -display none"

# lab_say TEXT: a progress line on the console (`cargo xtask lab -v` shows it).
lab_say() {
	echo "LAB:SAY $*" > /dev/console
}

# up10: the uptime in tenths of a second (loops below wait by the clock, not by iterations:
# under TCG a loop's own commands take long).
up10() {
	read -r u _ < /proc/uptime
	f=${u#*.}
	echo $((${u%.*} * 10 + ${f%?}))
}

# wait_for FILE PATTERN TENTHS: until grep finds PATTERN in FILE (0) or TENTHS/10 s pass (1).
wait_for() {
	wend=$(($(up10) + $3))
	while ! grep -q "$2" "$1" 2> /dev/null; do
		[ "$(up10)" -ge $wend ] && return 1
		sleep 0.1
	done
	return 0
}

# alive_for PID TENTHS: waits while PID lives, at most TENTHS/10 s; 0 once it is gone.
alive_for() {
	aend=$(($(up10) + $2))
	while kill -0 "$1" 2> /dev/null; do
		[ "$(up10)" -ge $aend ] && return 1
		sleep 0.1
	done
	return 0
}

# count_of FILE PATTERN: how many lines of FILE match.
count_of() {
	grep -c "$2" "$1" 2> /dev/null || true
}

# hmp CMD...: one HMP command to the running QEMU (fd 3 is its pipe chardev's input).
hmp() {
	echo "$*" >&3
}

# hmp_until PATTERN TENTHS CMD...: repeats CMD every 0.2 s until PATTERN (extended regex)
# shows in the HMP log; 1 when it never does or QEMU is gone.
hmp_until() {
	hpat=$1 hend=$(($(up10) + $2))
	shift 2
	while ! grep -Eq "$hpat" hmp-$role.log 2> /dev/null; do
		[ "$(up10)" -ge $hend ] || ! kill -0 $qpid 2> /dev/null && return 1
		hmp "$@"
		sleep 0.2
	done
	return 0
}

# rec_begin FILE [PID]: migscope record into FILE (beside the QEMU with PID when given), once it
# says it is recording.
rec_begin() {
	if [ -n "$2" ]; then
		migscope record --pid "$2" -o "$1" 2> "$1.err" &
	else
		migscope record -o "$1" 2> "$1.err" &
	fi
	recpid=$!
	wait_for "$1.err" recording 300 || echo "qemu: record never said recording ($1)"
}

# qemu_side ROLE LATE DMA BDF...: one QEMU (ROLE src: runs, migrates to /tmp/x.mig, quits;
# ROLE dst: -incoming defer, loads /tmp/x.mig, runs, quits), traced into ROLE.jsonl.
qemu_side() {
	role=$1 late=$2 dma=$3
	shift 3
	args=""
	for b in "$@"; do
		args="$args -device vfio-pci,host=$b,enable-migration=on"
	done
	[ "$dma" = 1 ] && args="$args -kernel /lab/l2-dma.elf"
	[ $role = dst ] && args="$args -incoming defer"
	rm -f /tmp/$role.in /tmp/$role.out $role.jsonl* qemu-$role.* l2-$role.log hmp-$role.log
	[ $role = src ] && rm -f /tmp/x.mig
	mkfifo /tmp/$role.in /tmp/$role.out
	echo "lab: qemu $role start" > /dev/kmsg
	[ "$late" = 0 ] && rec_begin $role.jsonl
	$QEMU_L2 $args -chardev pipe,id=hmp,path=/tmp/$role -mon chardev=hmp,mode=readline \
		-serial file:l2-$role.log -trace events=/lab/qemu-trace-events,file=qemu-$role.trace \
		2> qemu-$role.err &
	qpid=$!
	lab_say "qemu $role started (pid $qpid)"
	# Both fifos opened read-write: neither open blocks, whether or not QEMU got that far.
	exec 3<> /tmp/$role.in
	cat 0<> /tmp/$role.out > hmp-$role.log &
	catpid=$!
	ok=0
	# Every device realized with migration (QEMU has opened it) and the monitor answering.
	n=$#
	rend=$(($(up10) + 600))
	while [ "$(count_of qemu-$role.trace vfio_migration_realize)" -lt $n ]; do
		[ "$(up10)" -ge $rend ] || ! kill -0 $qpid 2> /dev/null && break
		sleep 0.1
	done
	if hmp_until "VM status" 300 info status; then
		ok=1
	else
		echo "qemu: $role QEMU never answered on HMP"
	fi
	lab_say "qemu $role: devices realized $(count_of qemu-$role.trace vfio_migration_realize)/$n, monitor ok=$ok"
	if [ $ok = 1 ] && [ "$late" = 1 ]; then
		rec_begin $role.jsonl $qpid
	fi
	if [ $ok = 1 ] && [ $role = src ]; then
		if [ "$dma" = 1 ] && ! wait_for l2-src.log "pair=2 " 600; then
			echo "qemu: the L2 guest made no DMA before the migration"
		fi
		lab_say "qemu src: migrate (L2 DMA pairs so far: $(count_of l2-src.log pair=))"
		# QEMU switches over once what is left fits its downtime limit (300 ms by default).
		# Without device or IOMMU dirty tracking it counts every pinned page dirty (type1
		# VFIO_IOMMU_DIRTY_PAGES), which never fits: allow the most QEMU accepts.
		hmp migrate_set_parameter downtime-limit 2000000
		hmp migrate -d file:/tmp/x.mig
		big=0
		mend=$(($(up10) + 1200))
		while ! grep -Eq "igration status: *(completed|failed|cancelled)" hmp-$role.log; do
			if [ "$(up10)" -ge $mend ] || ! kill -0 $qpid 2> /dev/null; then
				echo "qemu: migration did not finish"
				break
			fi
			# A kernel without VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (6.1) gives QEMU no stop-copy
			# size: it assumes 100 GiB (hw/vfio/migration.c VFIO_MIG_STOP_COPY_SIZE), which
			# fits no downtime at the measured bandwidth. Tell QEMU the bandwidth instead.
			if [ $big = 0 ] && grep -q "stopcopy size 107374182400" qemu-$role.trace; then
				big=1
				echo "qemu src: QEMU assumes 100 GiB of device state (no MIG_DATA_SIZE): avail-switchover-bandwidth 1G"
				hmp migrate_set_parameter avail-switchover-bandwidth 1G
			fi
			hmp info migrate
			sleep 0.2
		done
		lab_say "qemu src: $(grep -a 'igration status:' hmp-$role.log | tail -1)"
	elif [ $ok = 1 ]; then
		lab_say "qemu dst: migrate_incoming"
		hmp migrate_incoming file:/tmp/x.mig
		if hmp_until "VM status: running" 1200 info status; then
			lab_say "qemu dst: running"
			if [ "$dma" = 1 ]; then
				want=$(($(count_of l2-dst.log "pair=") + 2))
				dend=$(($(up10) + 600))
				while [ "$(count_of l2-dst.log "pair=")" -lt $want ] && [ "$(up10)" -lt $dend ]; do
					sleep 0.1
				done
			fi
		else
			echo "qemu: the destination never ran"
		fi
	fi
	hmp info migrate
	hmp quit
	if ! alive_for $qpid 300; then
		echo "qemu: $role QEMU did not quit: killed"
		for t in /proc/$qpid/task/*; do
			echo "== $t $(cat $t/comm 2> /dev/null)"
			cat $t/stack 2> /dev/null
		done > qemu-$role.stacks
		kill -9 $qpid 2> /dev/null
		sleep 1
	fi
	if kill -0 $qpid 2> /dev/null; then
		# Stuck in the kernel (D state): say where, and go on without it.
		echo "qemu: $role QEMU is stuck in the kernel (qemu-$role.stacks)"
		echo w > /proc/sysrq-trigger
		qrc=137
	else
		wait $qpid
		qrc=$?
	fi
	exec 3>&-
	sleep 0.2
	kill $catpid 2> /dev/null
	wait $catpid 2> /dev/null
	# record --pid ends with its QEMU; the one started first is stopped like Ctrl-C.
	[ "$late" = 0 ] && kill -INT $recpid 2> /dev/null
	if ! alive_for $recpid 300; then
		echo "qemu: $role record did not end: stopped"
		kill -INT $recpid
		sleep 2
		kill -9 $recpid 2> /dev/null
	fi
	wait $recpid
	rrc=$?
	echo "lab: qemu $role done" > /dev/kmsg
	echo "qemu $role: qemu exit $qrc, record exit $rrc, $(grep -a 'igration status:' hmp-$role.log | tail -1)"
	lab_say "qemu $role: qemu exit $qrc, record exit $rrc"
	[ $ok = 1 ] && [ $rrc -le 2 ]
}

# inflight_at_quiesce: edu-mig reported a transfer in flight at the source's quiesce (drained,
# or let through by bug=early_p2p) since the last source start.
inflight_at_quiesce() {
	dmesg | awk '/lab: qemu src start/ { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' |
		grep -q "drained in-flight DMA\|early_p2p: not waiting for DMA (a transfer is in flight)"
}

# qemu_case [-late] [-dma] [-inflight] [-src-only] BDF...: the source then (unless -src-only)
# the destination. -inflight: the source needs a transfer in flight at its quiesce; an attempt
# where the L2 guest happened to be between two transfers is repeated (at most 5 attempts).
qemu_case() {
	late=0 dma=0 inflight=0 dest=1
	while :; do
		case $1 in
		-late) late=1 ;;
		-dma) dma=1 ;;
		-inflight) inflight=1 ;;
		-src-only) dest=0 ;;
		*) break ;;
		esac
		shift
	done
	attempt=1
	while :; do
		qemu_side src $late $dma "$@"
		st=$?
		[ $inflight = 0 ] || inflight_at_quiesce || [ $attempt -ge 5 ] && break
		echo "qemu: attempt $attempt: no transfer was in flight at the quiesce; again"
		attempt=$((attempt + 1))
	done
	echo "qemu: source attempts $attempt"
	[ $st = 0 ] || return $st
	[ $dest = 1 ] || return 0
	qemu_side dst $late $dma "$@"
}

[ -f /lab/run.sh ] && . /lab/run.sh

if [ -e /dev/ttyS1 ]; then
	stty -F /dev/ttyS1 raw -echo 2>/dev/null
	tar -c -C /out . > /dev/ttyS1
	sleep 0.2
fi
echo "LAB:DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
