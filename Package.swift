// swift-tools-version:6.1
//
// eeRPC + eekv: one package. The module layout follows shared/DESIGN.md §2.
import PackageDescription

// Settings shared by every Swift target.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

// The runtime's data path. Release builds drop dynamic exclusivity checks (they put
// `swift_beginAccess` calls on every class-field access in the event loop, research/swift-style.md §6);
// the static checks stay, and debug builds keep the dynamic ones so the tests still catch overlaps.
let dataPathSettings: [SwiftSetting] = strictSettings + [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "eeRPC",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "EERPC", targets: ["EERPC"]),
        .library(name: "EEKV", targets: ["EEKV"]),
        .executable(name: "eekv", targets: ["eekv"]),
    ],
    // Package.resolved stays out of git, so the ranges are what makes a fresh clone build the
    // versions this was tested with: bug-fix releases only (hdrhistogram-swift is pre-1.0, where
    // a minor release may break).
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", .upToNextMinor(from: "1.8.2")),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", .upToNextMinor(from: "0.2.0")),
        .package(url: "https://github.com/apple/swift-log", .upToNextMinor(from: "1.16.2")),
    ],
    targets: [
        // MARK: System libraries (Debian packages installed by deploy/install-deps.sh)
        .systemLibrary(name: "CNuma", pkgConfig: "numa", providers: [.apt(["libnuma-dev"])]),
        .systemLibrary(name: "CIBVerbs", pkgConfig: "libibverbs", providers: [.apt(["libibverbs-dev"])]),
        .systemLibrary(name: "CLibSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        // ipsec-mb ships no .pc file: the modulemap links IPSec_MB itself.
        .systemLibrary(name: "CIPsecMB", providers: [.apt(["libipsec-mb-dev"])]),

        // MARK: C shims
        // GNU-only calls (recvmmsg/sendmmsg, CPU affinity) need _GNU_SOURCE, which Glibc's module lacks.
        .target(name: "CSystemShims", cSettings: [.define("_GNU_SOURCE")]),
        // ipsec-mb's GCM calls are macros over function pointers, and OpenSSL's GCM sequence uses
        // control macros: one C call per seal/open for Swift.
        .target(
            name: "CCryptoShims", dependencies: ["CIPsecMB", "CLibSSL", "CSystemShims"], cSettings: [.define("_GNU_SOURCE")],
            // Modulemap `link` lines only reach Swift importers; a C target names its libraries itself.
            linkerSettings: [.linkedLibrary("IPSec_MB"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        // Test-only malloc interposer with per-thread counters (research/swift-style.md §1.6).
        .target(name: "CAllocCounter", path: "Tests/CAllocCounter", cSettings: [.define("_GNU_SOURCE")]),

        // MARK: The runtime
        .target(
            name: "EERPC",
            dependencies: ["CSystemShims", "CNuma", "CCryptoShims", "CLibSSL"],
            swiftSettings: dataPathSettings
        ),

        // MARK: The store
        .target(
            name: "EEKV",
            dependencies: ["EERPC", "CLMDB", "CSystemShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),

        // MARK: The YCSB load generator (no dependency on the runtime)
        .target(
            name: "YCSB", dependencies: [.product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: strictSettings),
        // Database bindings for the YCSB runner.
        .target(
            name: "YCSBBindings", dependencies: ["YCSB", "EEKV", "EERPC", "CSystemShims", "CCryptoShims"],
            swiftSettings: strictSettings),

        // MARK: The CLI
        .executableTarget(
            name: "eekv",
            dependencies: [
                "EERPC",
                "EEKV",
                "YCSB",
                "YCSBBindings",
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strictSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "EERPCTests",
            dependencies: ["EERPC", "CAllocCounter", "CSystemShims", "CCryptoShims"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "EEKVTests",
            dependencies: ["EEKV", "EERPC", "CSystemShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "YCSBTests", dependencies: ["YCSB"], swiftSettings: strictSettings),
        .testTarget(
            name: "YCSBBindingsTests",
            dependencies: ["YCSBBindings", "YCSB", "EEKV", "EERPC", "CSystemShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings),
        .testTarget(
            name: "SystemLibrariesTests",
            dependencies: ["CNuma", "CIBVerbs", "CLibSSL", "CLMDB", "CIPsecMB"],
            swiftSettings: strictSettings
        ),
    ]
)
