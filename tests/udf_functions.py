"""Functions a test server imports through ``udf_modules`` (``HEADWATER_UDF_MODULES``)."""

import pyarrow as pa
import pyarrow.compute as pc

import headwater


@headwater.udf
def heat_index(temperature: float, humidity: float) -> float:
    return pc.add(temperature, pc.multiply(humidity, 0.1))


@headwater.udf(params=["VARCHAR"], returns="VARCHAR")
def site_of(device_id: pa.Array) -> pa.Array:
    return pc.utf8_upper(pc.utf8_slice_codeunits(device_id, 0, 1))


@headwater.udf
def checked_celsius(temperature: float) -> float:
    """Refuses a temperature below absolute zero (a pipeline using it fails on one)."""
    if pc.any(pc.less(temperature, -273.15)).as_py():
        raise ValueError("a temperature below absolute zero")
    return temperature
