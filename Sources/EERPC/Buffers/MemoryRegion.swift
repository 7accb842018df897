import CNuma
import Glibc

/// Page-aligned memory straight from the kernel, placed on one NUMA node, backed by 2 MiB
/// hugepages when the system has them reserved. Used for the slabs of ``BufferPool`` and for
/// transport rings; never for small objects.
enum MemoryRegion {
    static let hugePageSize = 2 << 20

    /// True when libnuma can place memory on nodes (false in many VMs and containers).
    static let numaAvailable: Bool = numa_available() >= 0

    /// Maps `size` bytes (rounded up to a page) on `numaNode`, or returns nil when out of memory.
    /// The caller owns the mapping until it passes the same pointer and size to ``unmap``.
    static func map(size: Int, numaNode: Int) -> (pointer: UnsafeMutableRawPointer, size: Int)? {
        if size >= hugePageSize {
            let rounded = (size + hugePageSize - 1) & ~(hugePageSize - 1)
            let p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0)
            if let p, p != MAP_FAILED {
                place(p, size: rounded, numaNode: numaNode)
                return (p, rounded)
            }
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let rounded = (size + page - 1) & ~(page - 1)
        let p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { return nil }
        place(p, size: rounded, numaNode: numaNode)
        return (p, rounded)
    }

    static func unmap(_ pointer: UnsafeMutableRawPointer, size: Int) {
        munmap(pointer, size)
    }

    private static func place(_ p: UnsafeMutableRawPointer, size: Int, numaNode: Int) {
        if numaAvailable && numaNode >= 0 { numa_tonode_memory(p, size, Int32(numaNode)) }
    }
}
