"""What the browser tests do in Airflow 3's React UI, in the UI's own words: labels, buttons, links.

Every wait is explicit and bounded; a timeout names what was awaited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")

DIALOG = "[role=dialog]"
FIELD_ROOT = "./ancestor::*[@data-scope='field' and @data-part='root'][1]"


@dataclass(frozen=True)
class Field:
    """One input of the connection form, as a person sees it."""

    name: str
    label: str
    placeholder: str
    input_type: str
    description: str
    displayed: bool  # the field as a whole (a dropdown's named input is hidden by design)


@dataclass(frozen=True)
class Toast:
    title: str
    description: str
    kind: str


class AirflowUI:
    def __init__(self, driver: WebDriver, base_url: str, timeout: float = 30.0) -> None:
        self.driver = driver
        self.base_url = base_url
        self.timeout = timeout

    def wait(self, what: str, condition: Callable[[WebDriver], T], timeout: float | None = None) -> T:
        """``condition``'s first truthy answer; fails naming ``what`` after the timeout."""
        waiter = WebDriverWait(
            self.driver,
            timeout or self.timeout,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        try:
            return waiter.until(condition)
        except TimeoutException:
            raise AssertionError(
                f"timed out after {timeout or self.timeout:.0f}s waiting for {what} on {self.driver.current_url}"
            ) from None

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def button(self, text: str, within: str = "body") -> WebElement:
        """The visible button labelled ``text`` (its text or its aria-label)."""

        def find(driver: WebDriver) -> WebElement | None:
            for button in driver.find_elements(By.CSS_SELECTOR, f"{within} button"):
                if button.is_displayed() and text in (button.text.strip(), button.get_attribute("aria-label")):
                    return button
            return None

        return self.wait(f"a button {text!r}", find)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), f"could not write {path}"

    # ------------------------------------------------------------------ connections

    def add_connection(self) -> ConnectionForm:
        """Admin -> Connections -> Add Connection: the empty form."""
        self.open("/connections")
        self.button("Add Connection").click()
        self.wait(
            "the Add Connection dialog", lambda d: d.find_elements(By.CSS_SELECTOR, f"{DIALOG} [name=connection_id]")
        )
        return ConnectionForm(self)

    def test_connection(self, conn_id: str) -> Toast:
        """Press the Test Connection button of the connection's row; the message the UI shows."""
        self.open("/connections")

        def row_button(driver: WebDriver) -> WebElement | None:
            for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr"):
                cells = row.find_elements(By.CSS_SELECTOR, "td")
                if any(cell.text.strip() == conn_id for cell in cells):
                    found = row.find_elements(By.CSS_SELECTOR, "button[aria-label='Test Connection']")
                    return found[0] if found else None
            return None

        self.wait(f"the Test Connection button of {conn_id!r}", row_button).click()
        return self.toast("Test Connection")

    def toast(self, title_prefix: str, timeout: float = 60) -> Toast:
        def find(driver: WebDriver) -> Toast | None:
            for root in driver.find_elements(By.CSS_SELECTOR, "[data-scope=toast][data-part=root]"):
                title = " ".join(e.text for e in root.find_elements(By.CSS_SELECTOR, "[data-part=title]")).strip()
                if title.startswith(title_prefix):
                    description = root.find_elements(By.CSS_SELECTOR, "[data-part=description]")
                    text = description[0].text.strip() if description else ""
                    return Toast(title, text, root.get_attribute("data-type") or "")
            return None

        return self.wait(f"a message {title_prefix!r}", find, timeout)

    # ------------------------------------------------------------------ task instances

    def task_details(self, dag_id: str, run_id: str, task_id: str) -> None:
        self.open(f"/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}/details")
        self.wait(
            "the task instance page",
            lambda d: d.find_elements(By.XPATH, f"//*[normalize-space()={_xpath_str(task_id)}]"),
        )

    def asset(self, asset_id: int, *texts: str, consumer: str) -> None:
        """An asset's page, once it shows each of ``texts`` and lists ``consumer`` among the Dags
        it schedules (the button "1 Dag" under "Scheduled Dags" opens that list). The graph of
        producers and consumers is laid out after the page loads and does not always draw the
        consuming Dag, so the list is what is checked."""
        self.open(f"/assets/{asset_id}")
        for text in texts:
            self.wait(f"{text!r} on the asset page",
                      lambda d, t=text: t in d.find_element(By.TAG_NAME, "body").text, 60)
        self.button("1 Dag").click()
        self.wait(f"{consumer!r} among the Dags the asset schedules",
                  lambda d: consumer in d.find_element(By.TAG_NAME, "body").text)

    def extra_link(self, name: str) -> WebElement:
        """The task page's extra link called ``name`` (the UI shows a link once its URL is known)."""

        def find(driver: WebDriver) -> WebElement | None:
            for link in driver.find_elements(By.CSS_SELECTOR, "a[href]"):
                if link.is_displayed() and link.text.strip() == name:
                    return link
            return None

        return self.wait(f"the extra link {name!r}", find)


class ConnectionForm:
    def __init__(self, ui: AirflowUI) -> None:
        self.ui = ui
        self.driver = ui.driver

    def type_options(self) -> list[str]:
        """The names the Connection Type list offers."""
        box = self._type_box()
        box.click()
        options = self.ui.wait("the connection type list", lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"))
        names = [option.text.strip() for option in options]
        # Escape would close the whole dialog: a click on its title closes just the list.
        self.driver.find_element(By.CSS_SELECTOR, f"{DIALOG} h2").click()
        self.ui.wait(
            "the connection type list to close", lambda d: not d.find_elements(By.CSS_SELECTOR, "[role=option]")
        )
        return names

    def choose_type(self, hook_name: str) -> None:
        def type_in(driver: WebDriver) -> bool:
            box = self._type_box()  # found afresh: the select redraws its input as it opens
            box.click()
            box.send_keys(hook_name)
            return True

        self.ui.wait("the connection type box to take the name", type_in)

        def option(driver: WebDriver) -> WebElement | None:
            found = [o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text.strip() == hook_name]
            return found[0] if found else None

        self.ui.wait(f"the connection type {hook_name!r}", option).click()
        self.ui.wait(
            "the connection type's fields", lambda d: d.find_elements(By.CSS_SELECTOR, f"{DIALOG} [name=host]")
        )

    def _type_box(self) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f"{DIALOG} input[role=combobox]")

    def open_section(self, title: str) -> None:
        """Unfold one of the form's sections ("Standard Fields", "Extra Fields"); the UI folds the others."""
        trigger = self.ui.button(title, within=DIALOG)
        if trigger.get_attribute("aria-expanded") != "true":
            trigger.click()
        self.ui.wait(f"the section {title!r} to unfold", lambda d: trigger.get_attribute("aria-expanded") == "true")

    def _input(self, name: str) -> WebElement:
        """A standard field by its name (``host``), an extra field by its key (``token``)."""
        found = self.driver.find_elements(
            By.CSS_SELECTOR, f"{DIALOG} [name='{name}'], {DIALOG} [name='element_{name}'], {DIALOG} #element_{name}"
        )
        assert found, f"the form has no field {name!r}"
        return found[0]

    def field(self, name: str) -> Field:
        element = self._input(name)
        root = element.find_element(By.XPATH, FIELD_ROOT)
        label = root.find_element(By.CSS_SELECTOR, "[data-part=label]").get_attribute("textContent") or ""
        helper = root.find_elements(By.CSS_SELECTOR, "[data-part=helper-text]")
        return Field(
            name=name,
            label=label.replace("*", "").strip(),
            placeholder=element.get_attribute("placeholder") or "",
            input_type=element.get_attribute("type") or "",
            description=(helper[0].get_attribute("textContent") or "").strip() if helper else "",
            displayed=root.is_displayed(),
        )

    def fill(self, name: str, value: str) -> None:
        element = self._input(name)
        self.ui.wait(f"the field {name!r} to show", lambda d: element.is_displayed())
        element.clear()
        element.send_keys(value)
        self.ui.wait(f"the field {name!r} to take the value", lambda d: element.get_attribute("value") == value)

    def save(self) -> None:
        save = self.ui.button("Save", within=DIALOG)
        self.ui.wait("the Save button to be enabled", lambda d: save.is_enabled())
        save.click()
        self.ui.wait("the dialog to close", lambda d: not d.find_elements(By.CSS_SELECTOR, DIALOG))

    def close(self) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f"{DIALOG} [data-part=close-trigger]").click()
        self.ui.wait("the dialog to close", lambda d: not d.find_elements(By.CSS_SELECTOR, DIALOG))


def _xpath_str(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'
