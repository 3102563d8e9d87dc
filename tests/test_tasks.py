"""Tasks: each task drives its own connection; sharing one is refused."""

import asyncio
import unittest

import support
from aliases import backend_pid
from django_async_backend.db import async_connections


class TaskTests(unittest.IsolatedAsyncioTestCase):
    async def asyncTearDown(self) -> None:
        await async_connections.close_all()

    async def test_gather_children_get_their_own_connections(self) -> None:
        parent = await backend_pid(async_connections["default"])

        async def child() -> int:
            return await backend_pid(async_connections["default"])

        pids = await asyncio.gather(child(), child(), child())
        self.assertEqual(len(set(pids)), 3)
        self.assertNotIn(parent, pids)

    async def test_create_task_child_gets_its_own_connection(self) -> None:
        parent = await backend_pid(async_connections["default"])
        child = await asyncio.create_task(backend_pid_of_default())
        self.assertNotEqual(child, parent)

    async def test_taskgroup_children_get_their_own_connections(self) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(backend_pid_of_default()) for _ in range(3)]
        self.assertEqual(len({task.result() for task in tasks}), 3)

    async def test_parent_keeps_its_connection_after_children(self) -> None:
        connection = async_connections["default"]
        before = await backend_pid(connection)
        await asyncio.gather(backend_pid_of_default(), backend_pid_of_default())
        self.assertIs(async_connections["default"], connection)
        self.assertEqual(await backend_pid(connection), before)

    async def test_child_connections_are_released_when_children_end(self) -> None:
        before = support.count_sessions()
        await asyncio.gather(*(backend_pid_of_default() for _ in range(4)))
        self.assertEqual(await support.sessions_once_settled(before), before)

    async def test_passing_a_connection_to_another_task_is_refused(self) -> None:
        connection = async_connections["default"]
        await backend_pid(connection)
        with self.assertRaisesRegex(
            RuntimeError, "belongs to task .*independent_connection"
        ):
            await asyncio.create_task(backend_pid(connection))


async def backend_pid_of_default() -> int:
    return await backend_pid(async_connections["default"])


if __name__ == "__main__":
    unittest.main()
