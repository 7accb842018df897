// Each test calls into its library for real, so a missing header, symbol or
// shared object fails here rather than deep inside the runtime.
import CIBVerbs
import CIPsecMB
import CLMDB
import CLibSSL
import CNuma
import Foundation
import Testing

@Test func numaIsCallable() {
    // -1 means no NUMA support (common in VMs and containers), which is still a successful call.
    let available = numa_available()
    #expect(available == -1 || available >= 0)
    if available >= 0 {
        #expect(numa_max_node() >= 0)
    }
}

@Test func ibverbsListsDevices() {
    // Without RDMA hardware the list is empty, or nil when the kernel lacks verbs support;
    // either way the call overwrites the -1 sentinel.
    var count: Int32 = -1
    let list = ibv_get_device_list(&count)
    #expect(count >= 0)
    if let list { ibv_free_device_list(list) }
}

@Test func openSSLIsVersion3() {
    #expect(OpenSSL_version_num() >= 0x3000_0000)
    #expect(TLS_method() != nil)
}

@Test func lmdbRoundTrip() throws {
    #expect(String(cString: mdb_version(nil, nil, nil)).hasPrefix("LMDB"))

    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("lmdb-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }

    var env: OpaquePointer?
    try #require(mdb_env_create(&env) == MDB_SUCCESS)
    defer { mdb_env_close(env) }
    try #require(mdb_env_open(env, dir.path, 0, 0o600) == MDB_SUCCESS)

    var key = Array("key".utf8)
    var value = Array("value".utf8)
    var dbi = MDB_dbi()

    var txn: OpaquePointer?
    try #require(mdb_txn_begin(env, nil, 0, &txn) == MDB_SUCCESS)
    try #require(mdb_dbi_open(txn, nil, 0, &dbi) == MDB_SUCCESS)
    let putResult = key.withUnsafeMutableBytes { k in
        value.withUnsafeMutableBytes { v in
            var mk = MDB_val(mv_size: k.count, mv_data: k.baseAddress)
            var mv = MDB_val(mv_size: v.count, mv_data: v.baseAddress)
            return mdb_put(txn, dbi, &mk, &mv, 0)
        }
    }
    try #require(putResult == MDB_SUCCESS)
    try #require(mdb_txn_commit(txn) == MDB_SUCCESS)

    var readTxn: OpaquePointer?
    try #require(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &readTxn) == MDB_SUCCESS)
    defer { mdb_txn_abort(readTxn) }
    var out = MDB_val()
    let getResult = key.withUnsafeMutableBytes { k in
        var mk = MDB_val(mv_size: k.count, mv_data: k.baseAddress)
        return mdb_get(readTxn, dbi, &mk, &out)
    }
    try #require(getResult == MDB_SUCCESS)
    let read = Array(UnsafeRawBufferPointer(start: out.mv_data, count: out.mv_size))
    #expect(read == value)
}

@Test func ipsecMBAllocatesManager() throws {
    #expect(imb_get_version() > 0)
    let manager = try #require(alloc_mb_mgr(0))
    free_mb_mgr(manager)
}
