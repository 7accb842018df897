import CSystemShims
import Synchronization

/// A packet waiting for the AES pool.
struct OffloadEntry: BitwiseCopyable {
    /// TX: the packet to send once sealed (its header is the job's AAD, so it stays here).
    var item: TxItem
    /// RX: the received packet's length (the packet itself is in the staging slot).
    var length: Int
    var session: Int32
    /// The session's token at submission: a packet of a session released meanwhile is dropped.
    var token: UInt64
    /// The slot whose buffer a TX job reads; withdrawn slots cancel their jobs.
    var owner: Int32
    var cancelled: Bool
}

/// A FIFO of packets handed to the AES pool, each with a staging slot (an MTU plus tag and
/// nonce room), its job and a completion flag the worker sets. The dispatch thread harvests from
/// the head only, so packets leave in the order they arrived, whichever worker finished first.
///
/// Jobs are queued here first and posted to the pool in runs (`post(to:)`), at the end of a TX
/// or RX burst: one ring reservation and at most one worker wake-up per run, instead of one each
/// per packet. The newest `unposted` entries are the ones not posted yet.
///
/// Memory: all four arrays are allocated at init and freed by `deallocate()`, which the endpoint
/// calls after every job has completed.
struct OffloadRing {
    let capacity: Int
    let slotSize: Int
    let entries: UnsafeMutablePointer<OffloadEntry>
    /// Entry i's job, as posted (contiguous, so a run of them is posted at once), and kept so the
    /// dispatch thread can run it itself if no worker has.
    let jobs: UnsafeMutablePointer<AESJob>
    let flags: JobStateWords
    let staging: UnsafeMutableRawPointer
    var head = 0
    var count = 0
    /// The newest entries whose jobs have not been posted to the pool yet.
    var unposted = 0
    /// Post once this many jobs wait, without waiting for the burst to end: a worker should not
    /// sit idle while a long RX burst is processed.
    static let postThreshold = 16

    init(capacity: Int, slotSize: Int) {
        self.capacity = capacity
        self.slotSize = slotSize
        entries = .allocate(capacity: capacity)
        jobs = .allocate(capacity: capacity)
        flags = JobStateWords(count: capacity)
        staging = .allocate(byteCount: capacity * slotSize, alignment: 64)
    }

    func deallocate() {
        entries.deallocate()
        jobs.deallocate()
        flags.deallocate()
        staging.deallocate()
    }

    var isFull: Bool { count == capacity }

    /// The index of the n-th queued entry, oldest first (n == count: the next free one).
    @inline(__always) func index(_ n: Int) -> Int { (head + n) % capacity }
    /// The next free entry's index (the caller fills it, then `commit`s).
    @inline(__always) var tail: Int { index(count) }
    @inline(__always) func slot(_ i: Int) -> UnsafeMutableRawPointer { staging + i * slotSize }
    /// Queues the entry at `tail`, whose job is in `jobs[tail]`, to be posted.
    @inline(__always) mutating func commit() {
        count += 1
        unposted += 1
    }

    /// Posts the unposted jobs, oldest first, in at most two runs (the ring may wrap). When the
    /// pool is full the rest stay unposted, and the dispatch thread runs them itself as they
    /// reach the head (`helpHead`) unless a later call posts them first.
    @inline(__always) mutating func post(to pool: AESPool) {
        while unposted > 0 {
            let first = index(count - unposted)
            let run = min(unposted, capacity - first)
            let n = pool.submit(UnsafePointer(jobs + first), count: run)
            unposted -= n
            if n < run { return }
        }
    }

    /// The head entry's index if its job has finished (`AESJob.succeeded` or `.failed`).
    @inline(__always) func finishedHead() -> (index: Int, result: UInt32)? {
        guard count > 0 else { return nil }
        let r = flags.state(head)
        return r >= AESJob.succeeded ? (head, r) : nil
    }

    /// Runs the head job on this (the dispatch) thread if no worker has claimed it: when the
    /// workers have no CPU to run on (more busy threads than cores), offloading degrades to
    /// inline instead of waiting for a scheduler slot. Returns whether it ran one.
    @inline(__always) func helpHead() -> Bool {
        guard count > 0 else { return false }
        return jobs[head].runIfUnclaimed()
    }

    @inline(__always) mutating func popHead() {
        head = (head + 1) % capacity
        count -= 1
        // The head was unposted (so were all after it): the dispatch thread ran it itself.
        if unposted > count { unposted = count }
    }

    /// Waits until every queued job has finished (before keys or buffers they use go away),
    /// running unclaimed ones (the unposted ones among them) itself.
    mutating func waitForAll() {
        for n in 0..<count {
            let i = index(n)
            _ = jobs[i].runIfUnclaimed()
            while flags.state(i) < AESJob.succeeded { spinPause() }
        }
        unposted = 0
    }
}

extension RpcEndpoint {
    /// Whether a packet of a message of this size goes through the AES pool. Whole messages go
    /// one way, so their packets cannot overtake each other.
    @inline(__always)
    func offloads(messageSize: Int) -> Bool {
        guard aesPool != nil, messageSize >= offloadThreshold else { return false }
        // `.adaptive` stays inline while the pool would have to steal CPU from dispatch threads.
        return offloadThreshold == 0 || nexus.poolHasSpareCPU.load(ordering: .relaxed)
    }

    /// TX: queues one packet of an encrypted session for the AES pool (posted with the rest of
    /// the burst by `postOffloaded`). False: the ring is full; the caller posts, sends what is
    /// sealed and tries again (never inline, which would let this packet overtake the ones of its
    /// message still in the pool).
    @inline(__always)
    func submitSeal(_ item: UnsafeMutablePointer<TxItem>) -> Bool {
        guard !txOffload.isFull else { return false }
        let k = Int(item.pointee.owner)
        let s = k / Wire.sessionRequestWindow
        let i = txOffload.tail
        let entry = txOffload.entries + i
        let staging = txOffload.slot(i)
        let length = item.pointee.dataLength
        entry.initialize(
            to: OffloadEntry(item: item.pointee, length: length, session: Int32(s), token: sessions[s].token,
                owner: Int32(k), cancelled: false))
        // The entry's copy of the header is the one sealed (and sent): it carries the phase bit.
        let (key, nonce) = prepareSeal(&entry.pointee.item, session: s, staging: staging)
        let ticket = AESJob.arm(txOffload.flags[i])
        (txOffload.jobs + i).initialize(
            to: AESJob(
                seal: true, key: key, nonce: nonce, aad: UnsafeRawPointer(entry), aadCount: Wire.headerSize,
                source: item.pointee.data ?? UnsafeRawPointer(staging), destination: staging, count: length,
                tag: staging + length, done: UnsafePointer(txOffload.flags[i]), ticket: ticket))
        entry.pointee.item.data = UnsafeRawPointer(staging)
        entry.pointee.item.dataLength = length + Wire.tagSize
        txOffload.commit()
        if txOffload.unposted >= OffloadRing.postThreshold { txOffload.post(to: aesPool.unsafelyUnwrapped) }
        counters.offloadedSeals &+= 1
        slots[k].offloadPending += 1
        crypto[s].tx!.sealed &+= 1
        return true
    }

    /// TX: the next sealed packet ready to send, in submission order (nil: none finished yet).
    /// Cancelled packets are skipped. The item's data stays valid until the next submission.
    @inline(__always)
    func nextSealed() -> TxItem? {
        while let (i, _) = txOffload.finishedHead() {
            let entry = txOffload.entries[i]
            txOffload.popHead()
            slots[Int(entry.owner)].offloadPending -= 1
            if !entry.cancelled { return entry.item }
        }
        return nil
    }

    /// RX: hands an encrypted packet of a large enough message to the AES pool. False: open it
    /// inline (small message, control packet, or a key-phase change, which is handled inline).
    /// A full ring or pool is waited out, processing what has been opened meanwhile.
    @inline(__always)
    func submitOpen(_ base: UnsafeMutableRawPointer, length: Int, header: PacketHeader, session s: Int) -> Bool {
        guard offloads(messageSize: header.carriedMessageSize), length >= Wire.headerSize + Wire.tagSize,
            let pool = aesPool
        else { return false }
        let rx = crypto[s].rx.unsafelyUnwrapped
        // A phase change is handled inline, and what is in the pool goes first, but only once
        // the packet has authenticated (`openOtherPhase`): forged packets with the other phase
        // bit would otherwise make the dispatch thread wait out the pool for each.
        guard header.keyPhase == rx.phase else { return false }
        if rxOffload.isFull { rxOffload.post(to: pool) }
        while rxOffload.isFull {
            if !rxOffload.helpHead() { spinPause() }
            harvestOpened()
        }
        let i = rxOffload.tail
        let staging = rxOffload.slot(i)
        ee_copy(staging, base, length)
        let count = length - Wire.headerSize - Wire.tagSize
        let nonce = staging + length
        rx.current.writeNonce(of: header, to: nonce)
        rxOffload.entries[i] = OffloadEntry(
            item: TxItem(header: header, data: nil, dataLength: 0, route: UnsafePointer(routes)), length: length,
            session: Int32(s), token: sessions[s].token, owner: -1, cancelled: false)
        let ticket = AESJob.arm(rxOffload.flags[i])
        let body = staging + Wire.headerSize
        (rxOffload.jobs + i).initialize(
            to: AESJob(
                seal: false, key: rx.current.key, nonce: nonce, aad: UnsafeRawPointer(staging),
                aadCount: Wire.headerSize, source: body, destination: body, count: count, tag: body + count,
                done: UnsafePointer(rxOffload.flags[i]), ticket: ticket))
        rxOffload.commit()
        if rxOffload.unposted >= OffloadRing.postThreshold { rxOffload.post(to: pool) }
        counters.offloadedOpens &+= 1
        return true
    }

    /// RX: processes the packets the pool has opened, in arrival order.
    func harvestOpened() {
        while let (i, result) = rxOffload.finishedHead() {
            let entry = rxOffload.entries[i]
            let s = Int(entry.session)
            if result != AESJob.succeeded {
                drop(.authenticationFailed)
            } else if sessions[s].token != entry.token
                || (sessions[s].state != .connected && sessions[s].state != .disconnecting)
            {
                drop(.unknownSession)  // the session ended while the packet was being opened
            } else {
                let staging = rxOffload.slot(i)
                let header = (try? PacketHeader.parse(staging, length: entry.length, trailer: Wire.tagSize).get())
                if let header {
                    dispatch(
                        header,
                        payload: UnsafeRawBufferPointer(
                            start: staging + Wire.headerSize, count: entry.length - Wire.headerSize - Wire.tagSize),
                        session: s)
                }
            }
            rxOffload.popHead()
        }
    }

    /// RX: processes every packet in the pool's ring, waiting for those still being opened, so
    /// that an inline packet acted on next comes after them (see `openOtherPhase`).
    func drainOpened() {
        counters.poolDrains &+= 1
        guard let pool = aesPool, rxOffload.count > 0 else { return }
        rxOffload.post(to: pool)
        while rxOffload.count > 0 {
            if !rxOffload.helpHead() { spinPause() }
            harvestOpened()
        }
    }

    /// Cancels the slot's packets still waiting to be sealed (see `withdrawQueuedPackets`).
    func cancelOffloadedPackets(slot k: Int) {
        guard slots[k].offloadPending > 0 else { return }
        for n in 0..<txOffload.count {
            let entry = txOffload.entries + txOffload.index(n)
            if entry.pointee.owner == Int32(k) { entry.pointee.cancelled = true }
        }
    }

    /// Whether packet `packetNumber` of slot `k`'s current message is in the TX ring, to be sent
    /// once sealed (cancelled entries are not: they never go out).
    func awaitsSeal(slot k: Int, packetNumber: UInt16) -> Bool {
        for n in 0..<txOffload.count {
            let entry = txOffload.entries + txOffload.index(n)
            if entry.pointee.owner == Int32(k) && !entry.pointee.cancelled
                && UInt16(truncatingIfNeeded: UInt64(littleEndian: entry.pointee.item.header1) >> 48) == packetNumber
            {
                return true
            }
        }
        return false
    }

    /// Posts the jobs queued by this burst (TX or RX) to the pool.
    @inline(__always)
    func postOffloaded() {
        guard let pool = aesPool else { return }
        if txOffload.unposted > 0 { txOffload.post(to: pool) }
        if rxOffload.unposted > 0 { rxOffload.post(to: pool) }
    }

    /// Waits for every job in the pool that uses this endpoint's keys or buffers, and for the
    /// workers to pass any stale copies of them.
    func waitForOffloadedJobs() {
        txOffload.waitForAll()
        rxOffload.waitForAll()
        aesPool?.waitUntilDrained()
    }
}
