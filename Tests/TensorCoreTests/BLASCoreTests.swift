import Testing
import TensorCore

/// The choice of OpenBLAS kernels when OpenBLAS does not recognise the CPU (BLASCore).
@Suite struct BLASCoreTests {
    @Test func fallbackCoresAreReplacedByTheCPUsVectorLevel() {
        #expect(BLASCore.preferredCore(detected: "Prescott", cpuLevel: 3, userSetting: nil) == "SkylakeX")
        #expect(BLASCore.preferredCore(detected: "Prescott", cpuLevel: 2, userSetting: nil) == "Haswell")
        #expect(BLASCore.preferredCore(detected: "Core2", cpuLevel: 1, userSetting: nil) == "Sandybridge")
        #expect(BLASCore.preferredCore(detected: "unknown", cpuLevel: 2, userSetting: "") == "Haswell")
    }

    @Test func otherChoicesAreKept() {
        // The user's setting always wins, even a slow one.
        #expect(BLASCore.preferredCore(detected: "Prescott", cpuLevel: 3, userSetting: "Prescott") == nil)
        // A CPU without AVX: Prescott is right.
        #expect(BLASCore.preferredCore(detected: "Prescott", cpuLevel: 0, userSetting: nil) == nil)
        // OpenBLAS's own choice of an AVX core, and names this table does not know.
        #expect(BLASCore.preferredCore(detected: "Haswell", cpuLevel: 3, userSetting: nil) == nil)
        #expect(BLASCore.preferredCore(detected: "SkylakeX", cpuLevel: 3, userSetting: nil) == nil)
        #expect(BLASCore.preferredCore(detected: "NEOVERSEN1", cpuLevel: 0, userSetting: nil) == nil)
    }

    @Test func namesAreReadCaseInsensitively() {
        #expect(BLASCore.vectorLevel(ofCore: "SKYLAKEX") == 3)
        #expect(BLASCore.vectorLevel(ofCore: "haswell") == 2)
        #expect(BLASCore.vectorLevel(ofCore: "Prescott") == 0)
    }
}
