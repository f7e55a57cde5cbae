"""ecad-search: learned cache schedules for diffusion transformers.

from ecad_search import load_schedule, apply_schedule, estimate_macs
schedule = load_schedule("schedules/pixart-alpha/fora-2.json")
with apply_schedule(pipe, schedule):
    image = pipe("a red fox in the snow", num_inference_steps=schedule.num_steps).images[0]
print(estimate_macs(schedule) / 1e12, "TMACs")
"""

__version__ = "0.1.0"

from .cost import cache_memory, estimate_macs
from .formats import load_schedule, save_schedule
from .runtime import apply_schedule
from .schedule import BlockGroup, CacheSchedule, ScheduleError

__all__ = [
    "BlockGroup",
    "CacheSchedule",
    "ScheduleError",
    "__version__",
    "apply_schedule",
    "cache_memory",
    "estimate_macs",
    "load_schedule",
    "save_schedule",
]
