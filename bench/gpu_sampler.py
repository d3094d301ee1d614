"""GPU busy share and memory sampled in the background during a bench: NVML through ``pynvml``
(the ``nvidia-ml-py`` package), else ``nvidia-smi`` every 0.5 s, else nothing ("unavailable")."""

from __future__ import annotations

import statistics
import subprocess


class GpuSampler:
    """Background sampling of GPU utilisation (%) and memory used (MiB): pynvml, else nvidia-smi."""

    def __init__(self, index: int = 0, period: float = 0.2):
        import threading

        self.index, self.period, self.samples, self.source = index, period, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.source = "pynvml"
            while not self._stop.is_set():
                u = pynvml.nvmlDeviceGetUtilizationRates(h)
                m = pynvml.nvmlDeviceGetMemoryInfo(h)
                self.samples.append((float(u.gpu), m.used / 2**20))
                self._stop.wait(self.period)
            return
        except Exception:  # noqa: BLE001  (no pynvml / no NVML: try nvidia-smi)
            pass
        self.source = "nvidia-smi"
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                u, m = out.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(u), float(m)))
            except Exception:  # noqa: BLE001
                self.source = "unavailable"
                return
            self._stop.wait(max(self.period, 0.5))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"source": self.source, "samples": 0}
        util = [u for u, _ in self.samples]
        return {"source": self.source, "samples": len(util), "util_mean_pct": round(statistics.mean(util), 1),
                "util_median_pct": round(statistics.median(util), 1), "util_max_pct": round(max(util), 1),
                "mem_used_max_mib": round(max(m for _, m in self.samples), 1)}
