"""TemplateStore delegation (issue 5): message templates."""

from __future__ import annotations

from collections.abc import Sequence

from mailprime.domain.ids import TemplateId
from mailprime.domain.templates import Template, TemplateFields
from mailprime.storage.sql import templates
from mailprime.storage.sql.access import SqlAccess


class TemplateSql(SqlAccess):
    """The TemplateStore port's methods, on the writer and the read pool."""

    async def create_template(self, fields: TemplateFields) -> Template:
        now = self._clock.now()
        return await self._writer.run(lambda c: templates.create(c, fields, now))

    async def get_template(self, template_id: TemplateId) -> Template | None:
        return await self._read(lambda c: templates.get(c, template_id))

    async def get_template_by_name(self, name: str) -> Template | None:
        return await self._read(lambda c: templates.get_by_name(c, name))

    async def list_templates(self, *, limit: int = 1000) -> Sequence[Template]:
        return await self._read(lambda c: templates.list_all(c, limit))

    async def update_template(self, template_id: TemplateId, fields: TemplateFields) -> Template:
        now = self._clock.now()
        return await self._writer.run(lambda c: templates.replace(c, template_id, fields, now))

    async def delete_template(self, template_id: TemplateId) -> bool:
        return await self._writer.run(lambda c: templates.remove(c, template_id))
