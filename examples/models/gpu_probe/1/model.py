"""GPU probe: what a replica sees of its GPU, through the CUDA driver API alone.

The driver (``libcuda.so.1``) is called with ``ctypes``, so the package needs no pip package
and its environment builds offline. ``load_model`` initialises the driver and takes device 0's
primary context (device 0 of those in ``CUDA_VISIBLE_DEVICES``, which the server sets for each
replica). ``predict(allocate_mib, hold_seconds)`` frees what the replica allocated before,
allocates ``allocate_mib`` MiB of device memory (``cuMemAlloc``), writes every byte of it
(``cuMemsetD8``) and reads its first and last bytes back, keeps it until the next call, waits
``hold_seconds`` (so that concurrent calls reach different replicas), and answers a JSON
object: the replica's pid and ``CUDA_VISIBLE_DEVICES``, the device's name and memory, the bytes
it holds, and the device's free and total memory as the driver reports them
(``cuMemGetInfo``: what every process on the device leaves free).

The driver is looked up by the loader (``libcuda.so.1``), then at the places NVIDIA's container
runtimes put it; ``libcuda`` in the report says where it was found. ``replica`` is the replica's
id (``--replica-id`` of the runner's command line), so that reports of different replicas can be
told apart even where each replica has a PID namespace of its own.

Without a GPU (no driver, no device, or ``CUDA_VISIBLE_DEVICES`` empty) the model still loads,
and ``predict`` answers ``"gpu": null`` with ``"error": "no GPU: ..."`` saying why.
"""

import ctypes
import json
import os
import socket
import sys
import threading
import time
import uuid

try:  # the official clarifai uploader loads this file with its own ModelClass
    from clarifai.runners.models.model_class import ModelClass
except ImportError:  # Orchard (its runner and its uploader)
    from orchard.authoring import ModelClass


class CudaError(Exception):
    """A CUDA driver call failed (or the driver is missing); the message says which and why."""


MIB = 2**20
PATTERN = 0xA5  # the byte written over the allocation
# Where the driver may be when the loader does not find it (LD_LIBRARY_PATH is not passed on).
LIBCUDA = (
    "libcuda.so.1",
    "/usr/local/nvidia/lib64/libcuda.so.1",
    "/usr/local/nvidia/lib/libcuda.so.1",
    "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
    "/usr/lib64/libcuda.so.1",
    "/usr/lib/wsl/lib/libcuda.so.1",
)


def load_libcuda() -> tuple[ctypes.CDLL, str]:
    """The CUDA driver library and where it was found."""
    failures = []
    for name in LIBCUDA:
        try:
            return ctypes.CDLL(name), name
        except OSError as exc:
            failures.append(str(exc))
    raise CudaError(f"libcuda.so.1 could not be loaded (no NVIDIA driver): {failures[0]}")


def replica_id() -> str | None:
    """The ``--replica-id`` of the runner's command line, if it has one."""
    args = sys.argv
    for i, arg in enumerate(args[:-1]):
        if arg == "--replica-id":
            return args[i + 1]
    return None


class Driver:
    """The few CUDA driver calls the probe makes, on device 0 of the visible devices."""

    def __init__(self) -> None:
        self.lib, self.path = load_libcuda()
        self.call("cuInit", ctypes.c_uint(0))
        count = ctypes.c_int(0)
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if count.value < 1:
            raise CudaError("the driver sees no device")
        self.count = count.value
        device = ctypes.c_int(0)
        self.call("cuDeviceGet", ctypes.byref(device), ctypes.c_int(0))
        self.device = device
        name = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", name, ctypes.c_int(len(name)), device)
        self.name = name.value.decode(errors="replace")
        total = ctypes.c_size_t(0)
        self.call("cuDeviceTotalMem_v2", ctypes.byref(total), device)
        self.total_bytes = total.value
        version = ctypes.c_int(0)
        self.call("cuDriverGetVersion", ctypes.byref(version))
        self.driver_version = f"{version.value // 1000}.{version.value % 1000 // 10}"
        self.context = ctypes.c_void_p()
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(self.context), device)
        self.current()

    def error_name(self, code: int) -> str:
        text = ctypes.c_char_p()
        if self.lib.cuGetErrorName(code, ctypes.byref(text)) == 0 and text.value:
            return text.value.decode()
        return f"CUresult {code}"

    def call(self, name: str, *args: object) -> None:
        code = getattr(self.lib, name)(*args)
        if code != 0:
            raise CudaError(f"{name} failed: {self.error_name(code)}")

    def current(self) -> None:
        """Make the context current in this thread (calls come in worker threads)."""
        self.call("cuCtxSetCurrent", self.context)

    def memory(self) -> tuple[int, int]:
        """The device's (free, total) bytes, as the driver reports them."""
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self.call("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value

    def allocate(self, size: int) -> int:
        """``size`` bytes of device memory, every byte written with PATTERN and the first and
        last read back; returns the device pointer."""
        pointer = ctypes.c_uint64(0)
        self.call("cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(size))
        try:
            self.call(
                "cuMemsetD8_v2",
                ctypes.c_uint64(pointer.value),
                ctypes.c_ubyte(PATTERN),
                ctypes.c_size_t(size),
            )
            self.call("cuCtxSynchronize")
            for offset in (0, size - 1):
                byte = ctypes.c_ubyte(0)
                self.call(
                    "cuMemcpyDtoH_v2",
                    ctypes.byref(byte),
                    ctypes.c_uint64(pointer.value + offset),
                    ctypes.c_size_t(1),
                )
                if byte.value != PATTERN:
                    raise CudaError(f"byte {offset} reads {byte.value:#x}, not {PATTERN:#x}")
        except BaseException:
            self.free(pointer.value)
            raise
        return pointer.value

    def free(self, pointer: int) -> None:
        self.call("cuMemFree_v2", ctypes.c_uint64(pointer))


class GpuProbe(ModelClass):
    def load_model(self) -> None:
        self.lock = threading.Lock()
        self.load_id = uuid.uuid4().hex[:8]  # tells replicas apart where replica_id() is None
        self.held: tuple[int, int] | None = None  # (device pointer, bytes)
        self.driver: Driver | None = None
        self.error = ""
        try:
            self.driver = Driver()
        except CudaError as exc:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.error = f"no GPU: {exc} (CUDA_VISIBLE_DEVICES={visible!r})"

    @ModelClass.method
    def predict(self, allocate_mib: int = 256, hold_seconds: float = 0.0) -> str:
        """A JSON report of what this replica sees, after allocating and touching
        ``allocate_mib`` MiB of device memory (held until the next call)."""
        if not hasattr(self, "lock"):  # called without load_model (e.g. by an inspector)
            self.load_model()
        report: dict = {
            "replica": replica_id(),
            "load_id": self.load_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
            "gpu": None,
        }
        with self.lock:
            if self.driver is None:
                report["error"] = self.error
            else:
                report.update(self._probe(self.driver, int(allocate_mib)))
        if hold_seconds > 0:
            time.sleep(float(hold_seconds))
        return json.dumps(report, sort_keys=True)

    def _probe(self, driver: Driver, allocate_mib: int) -> dict:
        driver.current()
        if self.held is not None:
            driver.free(self.held[0])
            self.held = None
        free_before, _ = driver.memory()
        found: dict = {
            "gpu": driver.name,
            "libcuda": driver.path,
            "device_count": driver.count,
            "driver_version": driver.driver_version,
            "device_total_bytes": driver.total_bytes,
            "free_bytes_before": free_before,
            "allocated_bytes": 0,
        }
        try:
            if allocate_mib > 0:
                size = allocate_mib * MIB
                self.held = (driver.allocate(size), size)
                found["allocated_bytes"] = size
                found["touched"] = f"all {size} bytes written with {PATTERN:#x}, ends read back"
        except CudaError as exc:
            found["error"] = f"allocating {allocate_mib} MiB: {exc}"
        found["free_bytes"], found["total_bytes"] = driver.memory()
        return found
