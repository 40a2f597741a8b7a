"""The web console in a real browser: Debian's headless chromium, driven by selenium through
Debian's chromedriver (nothing is downloaded), against a 3-broker in-process cluster.

The topic is created through the console's form and its confirmation page, records are
produced with acks=all, a broker is killed and the overview marks every partition of the
topic under-replicated; after the broker is back the marks go away. Screenshots are saved
(`ACKLY_CONSOLE_SCREENSHOT=path.png` also saves the under-replicated view there, which is how
docs/console.png is made).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ackly.testing.cluster import InProcessCluster

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOPIC = "payments"
WAIT_S = 30.0


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(path), f"{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
    profile = tempfile.mkdtemp(prefix="ackly-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def poll_page(driver, url: str, condition, what: str):  # type: ignore[no-untyped-def]
    """Reload `url` until `condition(driver)` is truthy (bounded: WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        driver.get(url)
        value = condition(driver)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"the console did not show {what} within {WAIT_S} s")
        time.sleep(0.3)  # between reloads of a page whose state comes from other threads


def row_classes(driver, partition: int) -> set[str] | None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By

    try:
        row = driver.find_element(By.ID, f"partition-{TOPIC}-{partition}")
    except NoSuchElementException:
        return None
    return set((row.get_attribute("class") or "").split())


def test_console_marks_a_partition_under_replicated_while_a_broker_is_down(tmp_path, browser) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    cluster = InProcessCluster(str(tmp_path / "cluster"), 3, {"admin.listener": "127.0.0.1:0"}).start_all()
    try:
        viewer, victim = cluster.broker_ids[0], cluster.broker_ids[-1]
        address = cluster.server(viewer).admin_address
        assert address is not None
        base = f"http://{address[0]}:{address[1]}"

        # Create the topic through the console: the form, then its confirmation page.
        driver.get(base + "/create-topic")
        driver.find_element(By.NAME, "name").send_keys(TOPIC)
        for name, value in (("partitions", "3"), ("replication_factor", "3")):
            field = driver.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.ID, "review").click()
        assert f"Create topic {TOPIC}?" in driver.find_element(By.TAG_NAME, "h1").text
        driver.find_element(By.ID, "confirm").click()
        assert driver.current_url.startswith(f"{base}/topics/{TOPIC}")

        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
        for i in range(60):
            producer.produce(TOPIC, value=b"payment %d" % i, partition=i % 3)
        assert producer.flush(20) == 0
        del producer  # its connections close now, not at a broker's kill

        def all_in_sync(d) -> bool:  # type: ignore[no-untyped-def]
            rows = [row_classes(d, p) for p in range(3)]
            return all(r is not None and "under-replicated" not in r for r in rows)

        def hw(d, partition: int) -> str:  # type: ignore[no-untyped-def]
            return d.find_element(By.CSS_SELECTOR, f"#partition-{TOPIC}-{partition} td.hw").text

        # 20 records a partition: the HW the viewer shows (its own as leader, or the one the
        # leader last sent it as follower) reaches 20 once every replica has them.
        poll_page(driver, base + "/", lambda d: all_in_sync(d) and all(hw(d, p).lstrip("≤") == "20" for p in range(3)),
                  "every partition in sync with HW 20")

        cluster.kill(victim)
        poll_page(driver, base + "/",
                  lambda d: all("under-replicated" in (row_classes(d, p) or ()) for p in range(3)),
                  f"the partitions under-replicated after broker {victim} was killed")
        assert "unhealthy" in driver.find_element(By.ID, "cluster-health").text
        assert driver.find_element(By.ID, "under-replicated-count").text != "0"
        isr = driver.find_element(By.CSS_SELECTOR, f"#partition-{TOPIC}-0 td.isr").text
        assert str(victim) not in isr.split(", ")
        driver.save_screenshot(str(tmp_path / "under-replicated.png"))
        if os.environ.get("ACKLY_CONSOLE_SCREENSHOT"):
            driver.save_screenshot(os.environ["ACKLY_CONSOLE_SCREENSHOT"])

        cluster.start(victim)
        poll_page(driver, base + "/", all_in_sync, f"the partitions back in sync after broker {victim} returned")
        assert driver.find_element(By.CSS_SELECTOR, "#cluster-health .big").text == "healthy"
        driver.save_screenshot(str(tmp_path / "healed.png"))
        assert Path(tmp_path / "healed.png").stat().st_size > 10_000
    finally:
        cluster.close()
